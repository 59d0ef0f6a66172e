//! The decisions, as plain functions of what the Secrets hold and the time: whether the CA
//! must be re-created and whether a leaf must be re-issued, and why (for the log).

use super::certs::{CertError, CertInfo, parse_pair};
use chrono::{DateTime, Utc};
use rcgen::KeyPair;

/// Why a certificate must be (re-)issued.
#[derive(Debug, thiserror::Error)]
pub enum Reason {
    /// The Secret does not exist.
    #[error("it does not exist")]
    Missing,
    /// A key of the Secret is absent or empty.
    #[error("it has no {0}")]
    NoKey(&'static str),
    /// The certificate or key cannot be used.
    #[error("its certificate cannot be used")]
    Unusable(#[source] CertError),
    /// The CA has expired.
    #[error("it expired at {0}")]
    Expired(DateTime<Utc>),
    /// The leaf is within `renewBefore` of its end.
    #[error("it expires at {0}, within the renewal window")]
    Expiring(DateTime<Utc>),
    /// The leaf was not signed by the current CA.
    #[error("it was not issued by the current CA")]
    OtherCa,
    /// The leaf's `ca.crt` is not the current CA.
    #[error("its ca.crt is not the current CA")]
    StaleCaCopy,
}

/// The texts of a Secret that matter here (`None`: absent).
#[derive(Debug, Clone, Copy, Default)]
pub struct Texts<'a> {
    /// `ca.crt`.
    pub ca: Option<&'a str>,
    /// `tls.crt`.
    pub cert: Option<&'a str>,
    /// `tls.key`.
    pub key: Option<&'a str>,
}

/// The CA to keep, or why it must be made anew: it must parse, its key must match, and it
/// must not have expired. It is never renewed otherwise (ten years, as the Go operator).
pub fn ca(texts: Option<Texts<'_>>, now: DateTime<Utc>) -> Result<(CertInfo, KeyPair), Reason> {
    let texts = texts.ok_or(Reason::Missing)?;
    let cert = texts.cert.ok_or(Reason::NoKey("tls.crt"))?;
    let key = texts.key.ok_or(Reason::NoKey("tls.key"))?;
    let (info, key) = parse_pair(cert, key).map_err(Reason::Unusable)?;
    if now > info.not_after {
        return Err(Reason::Expired(info.not_after));
    }
    Ok((info, key))
}

/// Whether a leaf can stay: it parses with its key, chains to the current CA (`ca`, whose
/// PEM is `ca_pem`), carries that CA as `ca.crt`, and `now` is not past
/// `notAfter − renew_before`.
pub fn leaf(
    texts: Option<Texts<'_>>,
    ca: &CertInfo,
    ca_pem: &str,
    now: DateTime<Utc>,
    renew_before: std::time::Duration,
) -> Result<CertInfo, Reason> {
    let texts = texts.ok_or(Reason::Missing)?;
    let cert = texts.cert.ok_or(Reason::NoKey("tls.crt"))?;
    let key = texts.key.ok_or(Reason::NoKey("tls.key"))?;
    let (info, _) = parse_pair(cert, key).map_err(Reason::Unusable)?;
    if !info.chains_to(ca) {
        return Err(Reason::OtherCa);
    }
    if texts.ca.map(str::trim) != Some(ca_pem.trim()) {
        return Err(Reason::StaleCaCopy);
    }
    due(&info, now, renew_before)?;
    Ok(info)
}

/// `Err(Expiring)` when `now > notAfter − renew_before`.
pub fn due(
    info: &CertInfo,
    now: DateTime<Utc>,
    renew_before: std::time::Duration,
) -> Result<(), Reason> {
    let window = chrono::Duration::from_std(renew_before).unwrap_or(chrono::Duration::MAX);
    match info.not_after.checked_sub_signed(window) {
        Some(renew_at) if now <= renew_at => Ok(()),
        _ => Err(Reason::Expiring(info.not_after)),
    }
}

#[cfg(test)]
mod tests {
    use super::super::certs::{LeafKind, issue_ca, issue_leaf};
    use super::super::keys;
    use super::*;
    use std::time::Duration;

    const DAY: Duration = Duration::from_secs(86_400);

    fn texts<'a>(ca: &'a str, cert: &'a str, key: &'a str) -> Option<Texts<'a>> {
        Some(Texts {
            ca: Some(ca),
            cert: Some(cert),
            key: Some(key),
        })
    }

    #[test]
    fn a_leaf_is_renewed_exactly_after_not_after_minus_renew_before() {
        let now = Utc::now();
        let root = issue_ca(now).unwrap();
        let (ca, key) = ca(texts("", &root.cert, &root.key), now).unwrap();
        let l = issue_leaf(LeafKind::Server, &root.cert, key, now, 90 * DAY).unwrap();
        let t = texts(&root.cert, &l.cert, &l.key);
        let not_after = leaf(t, &ca, &root.cert, now, 30 * DAY).unwrap().not_after;
        let renew_at = not_after - chrono::Duration::days(30);
        assert!(leaf(t, &ca, &root.cert, renew_at, 30 * DAY).is_ok());
        let later = renew_at + chrono::Duration::seconds(1);
        assert!(matches!(
            leaf(t, &ca, &root.cert, later, 30 * DAY),
            Err(Reason::Expiring(_))
        ));
        // A renewal window longer than the validity makes every leaf due at once.
        assert!(leaf(t, &ca, &root.cert, now, 91 * DAY).is_err());
    }

    #[test]
    fn a_leaf_of_another_ca_or_with_a_stale_ca_copy_or_a_foreign_key_is_reissued() {
        let now = Utc::now();
        let (root, other) = (issue_ca(now).unwrap(), issue_ca(now).unwrap());
        let (ca_info, _) = ca(texts("", &root.cert, &root.key), now).unwrap();
        let other_key = keys::parse(&other.key).unwrap();
        let stranger = issue_leaf(LeafKind::Client, &other.cert, other_key, now, DAY).unwrap();
        let t = texts(&root.cert, &stranger.cert, &stranger.key);
        assert!(matches!(
            leaf(t, &ca_info, &root.cert, now, Duration::ZERO),
            Err(Reason::OtherCa)
        ));
        let root_key = keys::parse(&root.key).unwrap();
        let mine = issue_leaf(LeafKind::Client, &root.cert, root_key, now, DAY).unwrap();
        let t = texts(&other.cert, &mine.cert, &mine.key);
        assert!(matches!(
            leaf(t, &ca_info, &root.cert, now, Duration::ZERO),
            Err(Reason::StaleCaCopy)
        ));
        let t = texts(&root.cert, &mine.cert, &stranger.key);
        assert!(matches!(
            leaf(t, &ca_info, &root.cert, now, Duration::ZERO),
            Err(Reason::Unusable(CertError::KeyMismatch))
        ));
        assert!(matches!(
            leaf(None, &ca_info, &root.cert, now, Duration::ZERO),
            Err(Reason::Missing)
        ));
    }

    #[test]
    fn the_ca_is_kept_until_it_expires_and_replaced_when_broken() {
        let now = Utc::now();
        let root = issue_ca(now).unwrap();
        let (info, _) = ca(texts("", &root.cert, &root.key), now).unwrap();
        let years = (info.not_after - now).num_days();
        assert!((3650..=3654).contains(&years), "{years} days");
        let after = info.not_after + chrono::Duration::seconds(1);
        assert!(matches!(
            ca(texts("", &root.cert, &root.key), after),
            Err(Reason::Expired(_))
        ));
        assert!(matches!(
            ca(texts("", "garbage", &root.key), now),
            Err(Reason::Unusable(_))
        ));
        let no_key = Some(Texts {
            cert: Some(root.cert.as_str()),
            ..Texts::default()
        });
        assert!(matches!(ca(no_key, now), Err(Reason::NoKey("tls.key"))));
    }
}
