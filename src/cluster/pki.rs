//! The cluster's certificate authorities and service-account key pair, made in Rust the way
//! k0s makes them itself (`pkg/certificate/manager.go`): RSA 2048 keys in PKCS#1 PEM
//! (`RSA PRIVATE KEY`), self-signed CA certificates, `sa.pub` as a PKIX `PUBLIC KEY`. k0s
//! reuses a key and certificate pair it finds in `<data-dir>/pki` before its first start
//! (`docs/custom-ca.md`), so a controller whose card carries these files signs everything
//! with the cluster's CA, and a worker's token can carry that CA before any node is up.

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose,
    SerialNumber, PKCS_RSA_SHA256,
};
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
use rsa::RsaPrivateKey;

/// How long the CAs are valid: an edge cluster lives for years, and a CA that expires takes
/// every node down with it (k0s's own default is 10 years).
pub const CA_YEARS: i64 = 20;

/// The files of `<data-dir>/pki` a cluster owns, as (path under `pki/`, common name).
pub const CAS: &[(&str, &str)] = &[
    ("ca", "kubernetes-ca"),
    ("etcd/ca", "etcd-ca"),
    ("front-proxy-ca", "kubernetes-front-proxy-ca"),
];

/// The file names under `pki/`, in the order they are written.
pub fn file_names() -> Vec<String> {
    let mut out = Vec::new();
    for (base, _) in CAS {
        out.push(format!("{base}.crt"));
        out.push(format!("{base}.key"));
    }
    out.push("sa.key".into());
    out.push("sa.pub".into());
    out
}

fn rsa_key() -> Result<RsaPrivateKey> {
    RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).context("generating an RSA 2048 key")
}

/// A self-signed CA certificate for `cn` and its key, both PEM.
pub fn make_ca(cn: &str, now: time::OffsetDateTime) -> Result<(String, String)> {
    let key = rsa_key()?;
    let pkcs8 = key
        .to_pkcs8_pem(LineEnding::LF)
        .context("encoding the CA key")?;
    let pair = KeyPair::from_pkcs8_pem_and_sign_algo(&pkcs8, &PKCS_RSA_SHA256)
        .context("loading the CA key for signing")?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
    ];
    // A clock a little behind (a Pi without RTC, before NTP) must still accept the CA.
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(365 * CA_YEARS);
    let mut serial = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut serial);
    serial[0] &= 0x7f;
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    let cert = params
        .self_signed(&pair)
        .with_context(|| format!("signing the {cn} certificate"))?;
    let key_pem = key
        .to_pkcs1_pem(LineEnding::LF)
        .context("encoding the CA key")?;
    Ok((cert.pem(), key_pem.to_string()))
}

/// The service-account key pair: `sa.key` (PKCS#1) and `sa.pub` (PKIX), PEM.
pub fn make_sa() -> Result<(String, String)> {
    let key = rsa_key()?;
    let private = key
        .to_pkcs1_pem(LineEnding::LF)
        .context("encoding sa.key")?
        .to_string();
    let public = key
        .to_public_key()
        .to_public_key_pem(LineEnding::LF)
        .context("encoding sa.pub")?;
    Ok((private, public))
}

/// Every file of `pki/`, as (path under `pki/`, PEM text).
pub fn make_all(now: time::OffsetDateTime) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for (base, cn) in CAS {
        let (crt, key) = make_ca(cn, now)?;
        out.push((format!("{base}.crt"), crt));
        out.push((format!("{base}.key"), key));
    }
    let (k, p) = make_sa()?;
    out.push(("sa.key".into(), k));
    out.push(("sa.pub".into(), p));
    Ok(out)
}
