//! The user's own Secure Boot keys: a PK, KEK and db key pair with self-signed certificates,
//! and the signed EFI signature lists (`.auth`) that enroll them (PK signed by itself, KEK by
//! PK, db by KEK), as `edgeimg keys generate DIR` writes them and `build --secure-boot DIR`
//! reads them.
//!
//! Folder layout: `{PK,KEK,db}.key` (PKCS#8 PEM, RSA 2048: what OVMF and most firmware
//! accept), `{PK,KEK,db}.crt` (PEM), `{PK,KEK,db}.cer` (DER, for firmware setup menus),
//! `{PK,KEK,db}.esl` and `{PK,KEK,db}.auth`, `GUID` (the signature owner).

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};
use rsa::RsaPrivateKey;
use sha2::{Digest, Sha256};
use x509_cert::builder::{Builder, CertificateBuilder, Profile};
use x509_cert::der::{DecodePem, Encode, EncodePem};
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::SubjectPublicKeyInfoOwned;
use x509_cert::time::Validity;

use super::sign::KeyCert;

/// The three keys, in the order they are enrolled.
pub const NAMES: [&str; 3] = ["PK", "KEK", "db"];

/// `EFI_CERT_X509_GUID`
const CERT_X509: &str = "a5c059a1-94e4-4aa7-87b5-ab155c2bf072";
/// `EFI_CERT_TYPE_PKCS7_GUID`
const CERT_TYPE_PKCS7: &str = "4aafd29d-68df-49ee-8aa9-347d375665a7";
/// `EFI_GLOBAL_VARIABLE` (PK, KEK)
const GLOBAL_VARIABLE: &str = "8be4df61-93ca-11d2-aa0d-00e098032b8c";
/// `EFI_IMAGE_SECURITY_DATABASE_GUID` (db)
const IMAGE_SECURITY_DATABASE: &str = "d719b2cb-3d3a-4596-a3bc-dad00e67656f";
/// NON_VOLATILE | BOOTSERVICE_ACCESS | RUNTIME_ACCESS | TIME_BASED_AUTHENTICATED_WRITE_ACCESS
const AUTH_ATTRIBUTES: u32 = 0x01 | 0x02 | 0x04 | 0x20;

/// A GUID in the mixed-endian byte order EFI stores it in.
pub fn guid_bytes(text: &str) -> Result<[u8; 16]> {
    let hexs: String = text.chars().filter(|c| *c != '-').collect();
    let raw = hex::decode(&hexs).ok().filter(|b| b.len() == 16);
    let Some(b) = raw else {
        bail!("{text:?} is not a GUID (like 8be4df61-93ca-11d2-aa0d-00e098032b8c)");
    };
    let mut out = [0u8; 16];
    out[..4].copy_from_slice(&[b[3], b[2], b[1], b[0]]);
    out[4..6].copy_from_slice(&[b[5], b[4]]);
    out[6..8].copy_from_slice(&[b[7], b[6]]);
    out[8..].copy_from_slice(&b[8..]);
    Ok(out)
}

/// An `EFI_SIGNATURE_LIST` holding one X.509 certificate owned by `owner`.
pub fn signature_list(cert_der: &[u8], owner: &[u8; 16]) -> Result<Vec<u8>> {
    let data_size = 16 + cert_der.len();
    let mut out = Vec::with_capacity(28 + data_size);
    out.extend_from_slice(&guid_bytes(CERT_X509)?);
    out.extend_from_slice(&((28 + data_size) as u32).to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&(data_size as u32).to_le_bytes());
    out.extend_from_slice(owner);
    out.extend_from_slice(cert_der);
    Ok(out)
}

/// `EFI_TIME` of a Unix time.
fn efi_time(unix: u64) -> [u8; 16] {
    let c = crate::util::time::Civil::from_unix(unix);
    let (y, mo, d, h, mi, s) = (c.year, c.month, c.day, c.hour, c.minute, c.second);
    let mut t = [0u8; 16];
    t[..2].copy_from_slice(&(y as u16).to_le_bytes());
    t[2] = mo as u8;
    t[3] = d as u8;
    t[4] = h as u8;
    t[5] = mi as u8;
    t[6] = s as u8;
    t
}

/// An authenticated variable write (`EFI_VARIABLE_AUTHENTICATION_2` + the data) of `var`
/// with the signature list `esl`, signed by `signer` at `unix`.
pub fn auth_file(var: &str, esl: &[u8], signer: &KeyCert, unix: u64) -> Result<Vec<u8>> {
    let vendor = guid_bytes(if var == "db" || var == "dbx" {
        IMAGE_SECURITY_DATABASE
    } else {
        GLOBAL_VARIABLE
    })?;
    let time = efi_time(unix);
    let mut signed = Vec::new();
    signed.extend(var.encode_utf16().flat_map(|c| c.to_le_bytes()));
    signed.extend_from_slice(&vendor);
    signed.extend_from_slice(&AUTH_ATTRIBUTES.to_le_bytes());
    signed.extend_from_slice(&time);
    signed.extend_from_slice(esl);
    let pkcs7 = signer.detached(&signed)?;
    let mut out = Vec::new();
    out.extend_from_slice(&time);
    // WIN_CERTIFICATE_UEFI_GUID: dwLength, wRevision 2.0, WIN_CERT_TYPE_EFI_GUID, CertType.
    out.extend_from_slice(&((24 + pkcs7.len()) as u32).to_le_bytes());
    out.extend_from_slice(&0x0200u16.to_le_bytes());
    out.extend_from_slice(&0x0ef1u16.to_le_bytes());
    out.extend_from_slice(&guid_bytes(CERT_TYPE_PKCS7)?);
    out.extend_from_slice(&pkcs7);
    out.extend_from_slice(esl);
    Ok(out)
}

/// A new RSA 2048 key with a self-signed certificate for `common_name`, valid from `now`.
fn new_key(common_name: &str, serial: u64, valid_years: u64) -> Result<KeyCert> {
    let mut rng = rand::thread_rng();
    let key = RsaPrivateKey::new(&mut rng, 2048).context("generating an RSA key")?;
    let signer = rsa::pkcs1v15::SigningKey::<Sha256>::new(key.clone());
    let subject = Name::from_str(&format!("CN={common_name}")).context("the certificate name")?;
    let spki = SubjectPublicKeyInfoOwned::from_key(key.to_public_key())
        .context("encoding the public key")?;
    let validity = Validity::from_now(Duration::from_secs(valid_years * 365 * 86400))
        .context("the certificate's validity")?;
    // Self-signed, for signing (digitalSignature): OpenSSL, and so sbverify, refuses a
    // signer whose key usage is only the CA bits.
    let builder = CertificateBuilder::new(
        Profile::Leaf {
            issuer: subject.clone(),
            enable_key_agreement: false,
            enable_key_encipherment: false,
        },
        SerialNumber::from(serial),
        validity,
        subject,
        spki,
        &signer,
    )
    .context("making the certificate")?;
    let cert = builder
        .build::<rsa::pkcs1v15::Signature>()
        .context("signing the certificate")?;
    Ok(KeyCert {
        key,
        cert_der: cert.to_der()?,
    })
}

/// Writes a new PK, KEK and db into `dir` (which must not hold keys yet). `owner` names
/// them (`CN=<owner> PK` ...). Returns the files written.
pub fn generate(dir: &Path, owner: &str, now: u64) -> Result<Vec<std::path::PathBuf>> {
    for n in NAMES {
        let p = dir.join(format!("{n}.key"));
        if p.exists() {
            bail!(
                "{} exists: keys generate never overwrites keys; choose an empty folder",
                p.display()
            );
        }
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let seed: [u8; 32] = rand::random();
    let guid_text = crate::util::guid::guid_from(&seed, "secure-boot-owner");
    let owner_guid = guid_bytes(&guid_text)?;
    let mut keys = Vec::new();
    for (i, n) in NAMES.iter().enumerate() {
        keys.push(new_key(
            &format!("{owner} {n}"),
            now * 4 + i as u64 + 1,
            30,
        )?);
    }
    let mut written = Vec::new();
    let mut put = |name: String, data: &[u8], private: bool| -> Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let p = dir.join(name);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(if private { 0o600 } else { 0o644 })
            .open(&p)
            .with_context(|| format!("creating {}", p.display()))?;
        f.write_all(data)
            .and_then(|_| f.sync_all())
            .with_context(|| format!("writing {}", p.display()))?;
        written.push(p);
        Ok(())
    };
    put("GUID".into(), format!("{guid_text}\n").as_bytes(), false)?;
    for (i, n) in NAMES.iter().enumerate() {
        let k = &keys[i];
        let pem = k
            .key
            .to_pkcs8_pem(LineEnding::LF)
            .context("encoding the private key")?;
        put(format!("{n}.key"), pem.as_bytes(), true)?;
        let cert = x509_cert::Certificate::from_der_bytes(&k.cert_der)?;
        put(
            format!("{n}.crt"),
            cert.to_pem(LineEnding::LF)?.as_bytes(),
            false,
        )?;
        put(format!("{n}.cer"), &k.cert_der, false)?;
        let esl = signature_list(&k.cert_der, &owner_guid)?;
        put(format!("{n}.esl"), &esl, false)?;
        // PK signs itself and KEK; KEK signs db.
        let by = &keys[i.saturating_sub(1)];
        put(format!("{n}.auth"), &auth_file(n, &esl, by, now)?, false)?;
    }
    Ok(written)
}

trait FromDerBytes: Sized {
    fn from_der_bytes(b: &[u8]) -> Result<Self>;
}

impl FromDerBytes for x509_cert::Certificate {
    fn from_der_bytes(b: &[u8]) -> Result<Self> {
        use x509_cert::der::Decode;
        Ok(x509_cert::Certificate::from_der(b)?)
    }
}

/// What `build --secure-boot DIR` reads from a key folder.
pub struct KeyDir {
    /// The db key and certificate, which sign systemd-boot and the UKI.
    pub db: KeyCert,
    /// `{PK,KEK,db}.auth` for the ESP's `loader/keys/auto/`.
    pub auth: Vec<(&'static str, Vec<u8>)>,
}

/// Reads a key folder made by [`generate`] (or by hand with the same names).
pub fn load(dir: &Path) -> Result<KeyDir> {
    let read = |name: &str| -> Result<Vec<u8>> {
        let p = dir.join(name);
        std::fs::read(&p).with_context(|| {
            format!(
                "reading {}: --secure-boot wants a folder made by `edgeimg keys generate {}`",
                p.display(),
                dir.display()
            )
        })
    };
    let key_pem = String::from_utf8(read("db.key")?).context("db.key is not PEM text")?;
    let key = RsaPrivateKey::from_pkcs8_pem(&key_pem).with_context(|| {
        format!(
            "{}: not an unencrypted PKCS#8 RSA private key",
            dir.join("db.key").display()
        )
    })?;
    let crt = read("db.crt")?;
    let cert = x509_cert::Certificate::from_pem(&crt)
        .with_context(|| format!("{}: not a PEM certificate", dir.join("db.crt").display()))?;
    let spki = SubjectPublicKeyInfoOwned::from_key(key.to_public_key())?;
    if cert.tbs_certificate.subject_public_key_info != spki {
        bail!(
            "{} and {} do not belong together: the certificate is of another key",
            dir.join("db.key").display(),
            dir.join("db.crt").display()
        );
    }
    let mut auth = Vec::new();
    for n in NAMES {
        auth.push((n, read(&format!("{n}.auth"))?));
    }
    Ok(KeyDir {
        db: KeyCert {
            key,
            cert_der: cert.to_der()?,
        },
        auth,
    })
}

/// Subject (RFC 4514 text) and SHA-256 fingerprint (hex) of a DER certificate.
pub fn describe_cert(der: &[u8]) -> Result<(String, String)> {
    use x509_cert::der::Decode;
    let cert = x509_cert::Certificate::from_der(der).context("reading a certificate")?;
    Ok((
        cert.tbs_certificate.subject.to_string(),
        hex::encode(Sha256::digest(der)),
    ))
}

/// The first certificate a PKCS#7 SignedData `ContentInfo` (DER) carries: the signer's.
pub fn signer_certificate(pkcs7: &[u8]) -> Result<Vec<u8>> {
    use super::der::{content, split};
    // ContentInfo { oid, [0] { SignedData { version, digestAlgs, contentInfo, [0] certs, ... } } }
    let ci = split(content(pkcs7))?;
    let sd = ci
        .get(1)
        .map(|e| content(e))
        .context("the signature has no SignedData")?;
    let sd = split(content(sd))?;
    match sd.get(3) {
        Some(certs) if certs[0] == 0xa0 => Ok(split(content(certs))?
            .first()
            .context("the signature's certificate list is empty")?
            .to_vec()),
        _ => bail!("the signature carries no certificate"),
    }
}
