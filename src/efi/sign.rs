//! PKCS#7 SignedData for UEFI: Authenticode signatures of PE images (what `sbsign` writes and
//! the firmware's `db` check reads) and the detached signatures of authenticated variables
//! (`.auth` files for enrolling PK, KEK and db).
//!
//! Both are RSA PKCS#1 v1.5 over SHA-256, which is deterministic: with a fixed signing time
//! the same key signs the same image into the same bytes.

use anyhow::{Context, Result};
use rsa::pkcs1v15::SigningKey;
use rsa::signature::{SignatureEncoding, Signer};
use rsa::RsaPrivateKey;
use sha2::{Digest, Sha256};
use x509_cert::der::{Decode, Encode};

use super::der::{self, alg, explicit, int, octets, oid, seq, set_of, tlv};
use super::pe;

const SIGNED_DATA: &str = "1.2.840.113549.1.7.2";
const DATA: &str = "1.2.840.113549.1.7.1";
const SPC_INDIRECT_DATA: &str = "1.3.6.1.4.1.311.2.1.4";
const SPC_PE_IMAGE_DATA: &str = "1.3.6.1.4.1.311.2.1.15";
const SPC_SP_OPUS_INFO: &str = "1.3.6.1.4.1.311.2.1.12";
const SHA256: &str = "2.16.840.1.101.3.4.2.1";
const RSA: &str = "1.2.840.113549.1.1.1";
const CONTENT_TYPE: &str = "1.2.840.113549.1.9.3";
const MESSAGE_DIGEST: &str = "1.2.840.113549.1.9.4";
const SIGNING_TIME: &str = "1.2.840.113549.1.9.5";

/// A key and its certificate (DER).
pub struct KeyCert {
    pub key: RsaPrivateKey,
    pub cert_der: Vec<u8>,
}

impl KeyCert {
    /// `IssuerAndSerialNumber` of the certificate.
    fn issuer_and_serial(&self) -> Result<Vec<u8>> {
        let cert = x509_cert::Certificate::from_der(&self.cert_der)
            .context("reading the signing certificate")?;
        let issuer = cert.tbs_certificate.issuer.to_der()?;
        let serial = cert.tbs_certificate.serial_number.to_der()?;
        Ok(seq(&[&issuer, &serial]))
    }

    fn sign_raw(&self, msg: &[u8]) -> Vec<u8> {
        SigningKey::<Sha256>::new(self.key.clone())
            .sign(msg)
            .to_vec()
    }

    /// SignedData around `content_info` with one signer.
    fn signed_data(&self, content_info: &[u8], signer_info_rest: &[&[u8]]) -> Result<Vec<u8>> {
        let mut signer = vec![int(1), self.issuer_and_serial()?, alg(SHA256)];
        signer.extend(signer_info_rest.iter().map(|p| p.to_vec()));
        let refs: Vec<&[u8]> = signer.iter().map(Vec::as_slice).collect();
        let signer_info = seq(&refs);
        Ok(seq(&[
            &int(1),
            &set_of(&[&alg(SHA256)]),
            content_info,
            &tlv(0xa0, &self.cert_der),
            &set_of(&[&signer_info]),
        ]))
    }

    /// The Authenticode signature (DER `ContentInfo`) of a PE image whose Authenticode
    /// SHA-256 digest is `digest`, signed at `signing_time` (Unix seconds).
    pub fn authenticode(&self, digest: &[u8; 32], signing_time: u64) -> Result<Vec<u8>> {
        // SpcIndirectDataContent { SpcAttributeTypeAndOptionalValue { SPC_PE_IMAGE_DATA,
        // SpcPeImageData { flags '', file [0] { [2] { [0] "<<<Obsolete>>>" } } } },
        // DigestInfo { sha256, digest } }
        let obsolete: Vec<u8> = "<<<Obsolete>>>"
            .encode_utf16()
            .flat_map(|c| c.to_be_bytes())
            .collect();
        let link = explicit(0, &explicit(2, &tlv(0x80, &obsolete)));
        let pe_image_data = seq(&[&[0x03, 0x01, 0x00], &link]);
        let indirect = seq(&[
            &seq(&[&oid(SPC_PE_IMAGE_DATA), &pe_image_data]),
            &seq(&[&alg(SHA256), &octets(digest)]),
        ]);
        // The message digest covers the content of the SEQUENCE, not its tag and length.
        let content_digest = Sha256::digest(der::content(&indirect));
        let attrs = [
            seq(&[&oid(CONTENT_TYPE), &set_of(&[&oid(SPC_INDIRECT_DATA)])]),
            seq(&[&oid(SIGNING_TIME), &set_of(&[&der::utc_time(signing_time)])]),
            seq(&[&oid(MESSAGE_DIGEST), &set_of(&[&octets(&content_digest)])]),
            seq(&[&oid(SPC_SP_OPUS_INFO), &set_of(&[&seq(&[])])]),
        ];
        let refs: Vec<&[u8]> = attrs.iter().map(Vec::as_slice).collect();
        let attr_set = set_of(&refs);
        let signature = self.sign_raw(&attr_set);
        // [0] IMPLICIT: the same content under the context tag.
        let mut signed_attrs = attr_set.clone();
        signed_attrs[0] = 0xa0;
        let content_info = seq(&[&oid(SPC_INDIRECT_DATA), &explicit(0, &indirect)]);
        let sd = self.signed_data(
            &content_info,
            &[&signed_attrs, &alg(RSA), &octets(&signature)],
        )?;
        Ok(seq(&[&oid(SIGNED_DATA), &explicit(0, &sd)]))
    }

    /// A detached SignedData (no content, no signed attributes) over `data`: the form
    /// `EFI_VARIABLE_AUTHENTICATION_2` carries.
    pub fn detached(&self, data: &[u8]) -> Result<Vec<u8>> {
        let signature = self.sign_raw(data);
        self.signed_data(&seq(&[&oid(DATA)]), &[&alg(RSA), &octets(&signature)])
    }
}

/// Signs a PE image in memory: pads it, appends the signature, fixes the checksum.
pub fn sign_image(image: &[u8], signer: &KeyCert, signing_time: u64) -> Result<Vec<u8>> {
    let mut out = image.to_vec();
    pe::pad_for_signature(&mut out);
    // The checksum is not part of the digest; leave it to embed_signature.
    let digest = pe::authenticode_digest(&out)?;
    let sig = signer.authenticode(&digest, signing_time)?;
    pe::embed_signature(&mut out, &sig)?;
    Ok(out)
}
