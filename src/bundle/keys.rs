//! The fleet's update key: Ed25519, the private key as PKCS#8 PEM (`openssl pkey` reads it),
//! the public key as SPKI PEM (what `openssl pkeyutl -verify -pubin` takes on the node).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};

use crate::plan::UpdateKey;

/// The two files `edgeimg keys fleet OUT` writes.
pub struct FleetKeyFiles {
    pub key: PathBuf,
    pub public: PathBuf,
}

fn with_suffix(out: &Path, suffix: &str) -> PathBuf {
    let mut s = out.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Makes a new key pair at `OUT.key` (mode 0600) and `OUT.pub`; never overwrites a file.
pub fn generate(out: &Path) -> Result<FleetKeyFiles> {
    let files = FleetKeyFiles {
        key: with_suffix(out, ".key"),
        public: with_suffix(out, ".pub"),
    };
    for f in [&files.key, &files.public] {
        if f.exists() {
            bail!(
                "{} exists: not overwriting a fleet key (images signed with it would no longer take updates); choose another OUT",
                f.display()
            );
        }
    }
    let sk = SigningKey::generate(&mut rand::rngs::OsRng);
    // PKCS#8 v1 (RFC 8410, no public key inside): what openssl 3.0 reads; dalek's own
    // encoding is the v2 form, which openssl 3.0's decoder refuses.
    let pem = ed25519_dalek::pkcs8::KeypairBytes {
        secret_key: sk.to_bytes(),
        public_key: None,
    }
    .to_pkcs8_pem(LineEnding::LF)
    .context("encoding the private key as PKCS#8")?;
    let public = sk
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .context("encoding the public key")?;
    put(&files.key, pem.as_bytes(), 0o600)?;
    put(&files.public, public.as_bytes(), 0o644)?;
    Ok(files)
}

fn put(p: &Path, data: &[u8], mode: u32) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(p)
        .with_context(|| format!("creating {}", p.display()))?;
    f.write_all(data)
        .and_then(|_| f.sync_all())
        .with_context(|| format!("writing {}", p.display()))
}

/// Reads a private key file.
pub fn load_signing_key(path: &Path) -> Result<SigningKey> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the signing key {}", path.display()))?;
    SigningKey::from_pkcs8_pem(&text).map_err(|e| {
        anyhow::anyhow!(
            "{}: not an Ed25519 private key in PKCS#8 PEM ({e}): make one with `edgeimg keys fleet OUT`",
            path.display()
        )
    })
}

/// Reads a public key (SPKI PEM).
pub fn parse_public(pem: &str, what: &str) -> Result<VerifyingKey> {
    VerifyingKey::from_public_key_pem(pem.trim())
        .map_err(|e| anyhow::anyhow!("{what}: not an Ed25519 public key in SPKI PEM ({e})"))
}

/// `build --signing-key FILE`: the key's public half for the plan.
pub fn update_key(path: &Path) -> Result<UpdateKey> {
    let sk = load_signing_key(path)?;
    Ok(UpdateKey {
        key_file: path.to_path_buf(),
        public_pem: sk
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .context("encoding the public key")?,
    })
}

/// The raw 64-byte signature of `data`.
pub fn sign(key: &SigningKey, data: &[u8]) -> [u8; 64] {
    key.sign(data).to_bytes()
}

/// Checks a raw 64-byte signature.
pub fn verify(key: &VerifyingKey, data: &[u8], sig: &[u8]) -> Result<()> {
    let sig: [u8; 64] = sig
        .try_into()
        .map_err(|_| anyhow::anyhow!("the signature is {} bytes, not 64", sig.len()))?;
    key.verify(data, &Signature::from_bytes(&sig))
        .map_err(|_| anyhow::anyhow!("bad signature: the bundle was not signed by this image's fleet key, or was changed after signing"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_sign_and_verify_and_are_never_overwritten() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("fleet");
        let f = generate(&out).unwrap();
        let sk = load_signing_key(&f.key).unwrap();
        let pk = parse_public(&std::fs::read_to_string(&f.public).unwrap(), "pub").unwrap();
        let sig = sign(&sk, b"manifest");
        verify(&pk, b"manifest", &sig).unwrap();
        assert!(verify(&pk, b"manifesT", &sig).is_err());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&f.key).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let e = generate(&out).err().unwrap().to_string();
        assert!(e.contains("not overwriting"), "{e}");
        let bad = d.path().join("bad.key");
        std::fs::write(&bad, "nope").unwrap();
        let e = load_signing_key(&bad).err().unwrap().to_string();
        assert!(e.contains("edgeimg keys fleet"), "{e}");
    }
}
