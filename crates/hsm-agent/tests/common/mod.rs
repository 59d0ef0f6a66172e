//! Test certificates: a CA and leaves signed by it, made with rcgen.
#![allow(dead_code)]

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};

/// A CA: its certificate (PEM) and what signs with it.
pub struct Ca {
    pub pem: String,
    pub issuer: Issuer<'static, KeyPair>,
}

pub fn ca(name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate().unwrap();
    let pem = params.self_signed(&key).unwrap().pem();
    Ca {
        pem,
        issuer: Issuer::new(params, key),
    }
}

/// A leaf certificate and key (PEM) for `name`, for a server or a client.
pub fn leaf(ca: &Ca, name: &str, server: bool) -> (String, String) {
    let mut params = CertificateParams::new(vec![name.to_owned()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.extended_key_usages = vec![if server {
        ExtendedKeyUsagePurpose::ServerAuth
    } else {
        ExtendedKeyUsagePurpose::ClientAuth
    }];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// A device on a SoftHSM2 fixture token with `pin`, retrying at once (no backoff).
pub fn test_device(hsm: &hsm_store::testing::SoftHsm, pin: &str) -> hsm_agent::device::Device {
    hsm_agent::device::Device::new(
        hsm_agent::device::DeviceConfig {
            min_backoff: std::time::Duration::ZERO,
            max_backoff: std::time::Duration::ZERO,
            ..hsm_agent::device::DeviceConfig::new(
                hsm_store::testing::SOFTHSM2_MODULE,
                hsm.selector(),
            )
        },
        Box::new(hsm_agent::pin::FixedPin(pin.into())),
    )
}
