//! The emulator's cluster CA: generated at start, it signs the serving certificate of
//! `serve --tls` (valid for 127.0.0.1, localhost and the `kubernetes.default.svc` names, and
//! for the address served when that is another one, as a cluster's API server certificate
//! names its advertised address) and is what the kubeconfig, the `kube-root-ca.crt`
//! ConfigMaps and ServiceAccount directories carry as `ca.crt`, as a cluster's are.

use std::net::IpAddr;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::ServerConfig;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// Errors making the CA or the TLS configuration.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Certificate generation failed.
    #[error("generating a certificate")]
    Generate(#[source] rcgen::Error),
    /// rustls refused the configuration.
    #[error("building the TLS configuration")]
    Config(#[source] rustls::Error),
}

/// The CA, which signs serving certificates.
pub struct ClusterCa {
    ca_pem: String,
    ca_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

/// The names every serving certificate holds: the loopback and in-cluster names.
const SERVER_NAMES: [&str; 5] = [
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
];

impl ClusterCa {
    /// A new CA.
    pub fn generate() -> Result<Self, TlsError> {
        let ca_key = KeyPair::generate().map_err(TlsError::Generate)?;
        let mut ca_params =
            CertificateParams::new(Vec::<String>::new()).map_err(TlsError::Generate)?;
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "api-emulator-ca");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key).map_err(TlsError::Generate)?;
        Ok(ClusterCa {
            ca_pem: ca_cert.pem(),
            ca_der: ca_cert.der().clone(),
            issuer: Issuer::new(ca_params, ca_key),
        })
    }

    /// The CA certificate, PEM (`ca.crt`).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// A serving certificate of this CA for the loopback and in-cluster names, 127.0.0.1,
    /// and `address` (unless it is the unspecified address, which no client dials): its
    /// chain (leaf, CA) and its key (PKCS#8 DER).
    pub fn server_certificate(
        &self,
        address: IpAddr,
    ) -> Result<(Vec<CertificateDer<'static>>, Vec<u8>), TlsError> {
        let key = KeyPair::generate().map_err(TlsError::Generate)?;
        let mut params = CertificateParams::new(SERVER_NAMES.map(String::from).to_vec())
            .map_err(TlsError::Generate)?;
        params
            .subject_alt_names
            .push(SanType::IpAddress([127, 0, 0, 1].into()));
        let loopback = IpAddr::from([127, 0, 0, 1]);
        if address != loopback && !address.is_unspecified() {
            params.subject_alt_names.push(SanType::IpAddress(address));
        }
        params
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(TlsError::Generate)?;
        Ok((
            vec![cert.der().clone(), self.ca_der.clone()],
            key.serialize_der(),
        ))
    }

    /// The rustls configuration of a server on `address` (HTTP/2 and HTTP/1.1 by ALPN), with
    /// a certificate of [`ClusterCa::server_certificate`].
    pub fn server_config(&self, address: IpAddr) -> Result<Arc<ServerConfig>, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let (chain, key) = self.server_certificate(address)?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key));
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Config)?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(TlsError::Config)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::client::danger::ServerCertVerifier;
    use rustls_pki_types::{ServerName, UnixTime};

    /// Whether a client trusting only the CA accepts `chain` for `name`.
    fn accepted(ca: &ClusterCa, chain: &[CertificateDer<'static>], name: &str) -> bool {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.ca_der.clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .unwrap();
        verifier
            .verify_server_cert(
                &chain[0],
                &chain[1..],
                &ServerName::try_from(name.to_owned()).unwrap(),
                &[],
                UnixTime::now(),
            )
            .is_ok()
    }

    #[test]
    fn the_serving_certificate_names_the_address_served_and_the_usual_names() {
        let ca = ClusterCa::generate().unwrap();
        let (chain, _) = ca.server_certificate(IpAddr::from([10, 89, 0, 1])).unwrap();
        for name in [
            "10.89.0.1",
            "127.0.0.1",
            "localhost",
            "kubernetes.default.svc",
        ] {
            assert!(accepted(&ca, &chain, name), "{name}");
        }
        assert!(!accepted(&ca, &chain, "10.89.0.2"));
        let (chain, _) = ca.server_certificate(IpAddr::from([127, 0, 0, 1])).unwrap();
        assert!(accepted(&ca, &chain, "127.0.0.1"));
        assert!(!accepted(&ca, &chain, "10.89.0.1"));
    }

    #[test]
    fn another_ca_is_not_trusted() {
        let (ca, other) = (
            ClusterCa::generate().unwrap(),
            ClusterCa::generate().unwrap(),
        );
        let (chain, _) = other
            .server_certificate(IpAddr::from([127, 0, 0, 1]))
            .unwrap();
        assert!(!accepted(&ca, &chain, "127.0.0.1"));
    }
}
