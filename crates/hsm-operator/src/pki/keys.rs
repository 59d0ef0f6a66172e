//! Private keys as the Secrets hold them. The Go operator wrote PEM `EC PRIVATE KEY` (SEC1,
//! RFC 5915) and so do we, so either operator can read the other's Secrets; rcgen (on ring)
//! signs only with PKCS#8 keys, hence the conversion both ways. Both PEM forms are read.

use rcgen::KeyPair;
use yasna::Tag;
use yasna::models::ObjectIdentifier;

/// `id-ecPublicKey` (RFC 5480).
const EC_PUBLIC_KEY: &[u64] = &[1, 2, 840, 10045, 2, 1];
/// `prime256v1` / P-256.
const P256: &[u64] = &[1, 2, 840, 10045, 3, 1, 7];

/// Why a key could not be read. Never carries key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Not one PEM block, or a block of another kind. No source: a decoder's message could
    /// quote bytes of the key.
    #[error("not a PEM `EC PRIVATE KEY` or `PRIVATE KEY` block")]
    Pem,
    /// The DER inside is not an EC private key of the expected shape.
    #[error("malformed EC private key")]
    Der(#[source] yasna::ASN1Error),
    /// The key is not on P-256.
    #[error("the key is not an ECDSA P-256 key")]
    NotP256,
    /// The SEC1 key lacks its public key, which ring requires.
    #[error("the EC private key has no public key")]
    NoPublicKey,
    /// rcgen (ring) refused the key.
    #[error("unusable private key")]
    Rejected(#[source] rcgen::Error),
}

/// The parts of an EC private key (RFC 5915) this module moves between formats.
struct EcKey {
    secret: Vec<u8>,
    public: (Vec<u8>, usize),
}

/// Reads a PEM private key (SEC1 or PKCS#8) as a signing key.
pub fn parse(pem: &str) -> Result<KeyPair, KeyError> {
    let block = pem::parse(pem).map_err(|_| KeyError::Pem)?;
    let pkcs8 = match block.tag() {
        "PRIVATE KEY" => block.into_contents(),
        "EC PRIVATE KEY" => sec1_to_pkcs8(block.contents())?,
        _ => return Err(KeyError::Pem),
    };
    KeyPair::try_from(pkcs8.as_slice()).map_err(KeyError::Rejected)
}

/// The key as PEM `EC PRIVATE KEY`, with its curve named (as Go's `x509.MarshalECPrivateKey`).
pub fn to_sec1_pem(key: &KeyPair) -> Result<String, KeyError> {
    let ec = from_pkcs8(key.serialized_der())?;
    let der = yasna::construct_der(|w| write_ec_key(w, &ec, true));
    Ok(pem::encode(&pem::Pem::new("EC PRIVATE KEY", der)))
}

fn p256() -> ObjectIdentifier {
    ObjectIdentifier::from_slice(P256)
}

/// `ECPrivateKey`: version 1, the secret, `[0]` the curve (optional), `[1]` the public key.
fn write_ec_key(w: yasna::DERWriter<'_>, ec: &EcKey, with_curve: bool) {
    w.write_sequence(|w| {
        w.next().write_u8(1);
        w.next().write_bytes(&ec.secret);
        if with_curve {
            w.next()
                .write_tagged(Tag::context(0), |w| w.write_oid(&p256()));
        }
        w.next().write_tagged(Tag::context(1), |w| {
            w.write_bitvec_bytes(&ec.public.0, ec.public.1)
        });
    });
}

fn read_ec_key(der: &[u8]) -> Result<EcKey, KeyError> {
    let (secret, curve, public) = yasna::parse_der(der, |r| {
        r.read_sequence(|r| {
            let _version = r.next().read_u8()?;
            let secret = r.next().read_bytes()?;
            let curve = r.read_optional(|r| r.read_tagged(Tag::context(0), |r| r.read_oid()))?;
            let public =
                r.read_optional(|r| r.read_tagged(Tag::context(1), |r| r.read_bitvec_bytes()))?;
            Ok((secret, curve, public))
        })
    })
    .map_err(KeyError::Der)?;
    if curve.is_some_and(|c| c != p256()) {
        return Err(KeyError::NotP256);
    }
    Ok(EcKey {
        secret,
        public: public.ok_or(KeyError::NoPublicKey)?,
    })
}

/// `PrivateKeyInfo` (RFC 5208) around an EC key, the form ring reads.
fn sec1_to_pkcs8(sec1: &[u8]) -> Result<Vec<u8>, KeyError> {
    let ec = read_ec_key(sec1)?;
    let inner = yasna::construct_der(|w| write_ec_key(w, &ec, false));
    Ok(yasna::construct_der(|w| {
        w.write_sequence(|w| {
            w.next().write_u8(0);
            w.next().write_sequence(|w| {
                w.next()
                    .write_oid(&ObjectIdentifier::from_slice(EC_PUBLIC_KEY));
                w.next().write_oid(&p256());
            });
            w.next().write_bytes(&inner);
        })
    }))
}

fn from_pkcs8(pkcs8: &[u8]) -> Result<EcKey, KeyError> {
    let (algorithm, curve, inner) = yasna::parse_der(pkcs8, |r| {
        r.read_sequence(|r| {
            let _version = r.next().read_u8()?;
            let (algorithm, curve) = r
                .next()
                .read_sequence(|r| Ok((r.next().read_oid()?, r.next().read_oid()?)))?;
            let inner = r.next().read_bytes()?;
            // Attributes and a v2 public key, if any, are not needed.
            let _ = r.read_optional(|r| r.read_der())?;
            let _ = r.read_optional(|r| r.read_der())?;
            Ok((algorithm, curve, inner))
        })
    })
    .map_err(KeyError::Der)?;
    if algorithm != ObjectIdentifier::from_slice(EC_PUBLIC_KEY) || curve != p256() {
        return Err(KeyError::NotP256);
    }
    read_ec_key(&inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sec1_round_trips_to_the_same_signing_key() {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let sec1 = to_sec1_pem(&key).unwrap();
        assert!(sec1.starts_with("-----BEGIN EC PRIVATE KEY-----"));
        let back = parse(&sec1).unwrap();
        assert_eq!(back.public_key_raw(), key.public_key_raw());
        // rustls reads the same PEM as a SEC1 key (the agent's side).
        use rustls_pki_types::pem::PemObject;
        let der = rustls_pki_types::PrivateKeyDer::from_pem_slice(sec1.as_bytes()).unwrap();
        assert!(matches!(der, rustls_pki_types::PrivateKeyDer::Sec1(_)));
    }

    #[test]
    fn pkcs8_is_read_too() {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let back = parse(&key.serialize_pem()).unwrap();
        assert_eq!(back.public_key_raw(), key.public_key_raw());
    }

    #[test]
    fn other_keys_and_garbage_are_refused_without_their_bytes() {
        let p384 = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        assert!(matches!(to_sec1_pem(&p384), Err(KeyError::NotP256)));
        let ed = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        assert!(to_sec1_pem(&ed).is_err());
        let cert_block = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(matches!(parse(cert_block), Err(KeyError::Pem)));
        let broken = "-----BEGIN EC PRIVATE KEY-----\nc2VjcmV0\n-----END EC PRIVATE KEY-----\n";
        let err = parse(broken).unwrap_err();
        assert!(matches!(err, KeyError::Der(_)));
        assert!(!format!("{err:?}").contains("c2VjcmV0"));
    }
}
