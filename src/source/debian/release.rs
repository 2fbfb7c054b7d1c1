//! A suite's `InRelease`: its OpenPGP signature checked against the Debian archive keys
//! carried in this repository, then the `SHA256:` list of index files read from the signed text.
//!
//! Only what the signature covers is ever parsed: the text comes out of the verified message,
//! never from the raw file.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use pgp::composed::{CleartextSignedMessage, Deserializable, SignedPublicKey};
use pgp::crypto::hash::HashAlgorithm;
use pgp::packet::{Signature, SignatureType};
use pgp::types::{KeyDetails, Tag};
use thiserror::Error;

use super::control::{parse_stanzas, Stanza};

/// The Debian archive keys (bookworm and trixie: archive, security and stable release keys),
/// exported from the `debian-archive-keyring` package.
const DEBIAN_KEYS: &[(&str, &[u8])] = &[
    (
        "debian-archive-bookworm-automatic",
        include_bytes!("../keys/debian-archive-bookworm-automatic.asc"),
    ),
    (
        "debian-archive-bookworm-security-automatic",
        include_bytes!("../keys/debian-archive-bookworm-security-automatic.asc"),
    ),
    (
        "debian-archive-bookworm-stable",
        include_bytes!("../keys/debian-archive-bookworm-stable.asc"),
    ),
    (
        "debian-archive-trixie-automatic",
        include_bytes!("../keys/debian-archive-trixie-automatic.asc"),
    ),
    (
        "debian-archive-trixie-security-automatic",
        include_bytes!("../keys/debian-archive-trixie-security-automatic.asc"),
    ),
    (
        "debian-archive-trixie-stable",
        include_bytes!("../keys/debian-archive-trixie-stable.asc"),
    ),
];

#[derive(Debug, Error)]
pub enum ReleaseError {
    #[error("{label}: not an OpenPGP clear-signed file ({detail})")]
    NotSigned { label: String, detail: String },
    #[error("{label}: no signature verifies with a valid Debian archive key ({details}); the file may be tampered with or signed by a key edgeimg does not carry")]
    BadSignature { label: String, details: String },
    #[error("{label}: no SHA256 entry for {path} (is the component or architecture right?)")]
    MissingIndex { label: String, path: String },
    #[error("{label}: bad SHA256 line {line:?}")]
    BadHashLine { label: String, line: String },
}

/// A key that may verify archive signatures, with the validity read from its self-signatures.
struct ValidKey {
    key: KeyRef,
    /// Primary key's name, for messages.
    owner: String,
    created: u64,
    /// Absolute expiry (seconds since the epoch), if any.
    expires: Option<u64>,
}

enum KeyRef {
    Primary(pgp::packet::PublicKey),
    Sub(pgp::packet::PublicSubkey),
}

impl KeyRef {
    fn details(&self) -> &dyn KeyDetails {
        match self {
            KeyRef::Primary(k) => k,
            KeyRef::Sub(k) => k,
        }
    }

    fn verify(&self, sig: &Signature, data: &[u8]) -> pgp::errors::Result<()> {
        match self {
            KeyRef::Primary(k) => sig.verify(k, data),
            KeyRef::Sub(k) => sig.verify(k, data),
        }
    }
}

/// The set of keys InRelease files are checked against.
pub struct Keyring {
    keys: Vec<ValidKey>,
}

impl Keyring {
    /// The Debian archive keys embedded in edgeimg.
    pub fn debian() -> Result<Keyring> {
        let mut certs = Vec::new();
        for (name, armored) in DEBIAN_KEYS {
            certs.push(parse_cert(armored).with_context(|| format!("embedded key {name}"))?);
        }
        Ok(Keyring::from_certs(&certs))
    }

    /// A keyring from armored public keys (tests use their own).
    pub fn from_armored(armored: &[&[u8]]) -> Result<Keyring> {
        let certs = armored
            .iter()
            .map(|a| parse_cert(a))
            .collect::<Result<Vec<_>>>()?;
        Ok(Keyring::from_certs(&certs))
    }

    /// Collects every signing-capable, non-revoked primary key and subkey whose self-signature
    /// verifies. Third-party certifications on Debian's keys are ignored: only the key's own
    /// signatures say what it may do and until when.
    fn from_certs(certs: &[SignedPublicKey]) -> Keyring {
        let mut keys = Vec::new();
        for cert in certs {
            let primary = &cert.primary_key;
            if cert
                .details
                .revocation_signatures
                .iter()
                .any(|s| s.verify_key(primary).is_ok())
            {
                continue;
            }
            let Some(selfsig) = newest_self_certification(cert) else {
                continue;
            };
            let owner = cert
                .details
                .users
                .first()
                .map(|u| u.id.to_string())
                .unwrap_or_default();
            let p_created = u64::from(primary.created_at().as_secs());
            let p_expires = expiry(p_created, selfsig);
            if selfsig.key_flags().sign() {
                keys.push(ValidKey {
                    key: KeyRef::Primary(primary.clone()),
                    owner: owner.clone(),
                    created: p_created,
                    expires: p_expires,
                });
            }
            for sub in &cert.public_subkeys {
                if sub
                    .signatures
                    .iter()
                    .any(|s| s.typ() == Some(SignatureType::SubkeyRevocation))
                {
                    continue;
                }
                // Checks each binding and, for signing subkeys, the subkey's back-signature.
                if sub.verify_bindings(primary).is_err() {
                    continue;
                }
                let Some(binding) = sub
                    .signatures
                    .iter()
                    .max_by_key(|s| s.created().map(|t| t.as_secs()))
                else {
                    continue;
                };
                if !binding.key_flags().sign() {
                    continue;
                }
                let created = u64::from(sub.key.created_at().as_secs());
                // A subkey is never valid longer than its primary key.
                let expires = match (expiry(created, binding), p_expires) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                keys.push(ValidKey {
                    key: KeyRef::Sub(sub.key.clone()),
                    owner: owner.clone(),
                    created,
                    expires,
                });
            }
        }
        Keyring { keys }
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Checks a clear-signed file and returns the signed text (CRLF line ends normalized to LF)
    /// and the owners of the keys that verified it. At least one signature must verify with a
    /// key that was valid and signing-capable when the signature was made.
    pub fn verify_clearsigned(
        &self,
        data: &[u8],
        label: &str,
    ) -> Result<(String, Vec<String>), ReleaseError> {
        let text = String::from_utf8_lossy(data);
        let (msg, _) =
            CleartextSignedMessage::from_string(&text).map_err(|e| ReleaseError::NotSigned {
                label: label.into(),
                detail: e.to_string(),
            })?;
        let signed = msg.signed_text();
        let mut good = Vec::new();
        let mut problems = Vec::new();
        for sig in msg.signatures() {
            match self.verify_one(sig, signed.as_bytes()) {
                Ok(owner) => good.push(owner),
                Err(p) => problems.push(p),
            }
        }
        if good.is_empty() {
            if problems.is_empty() {
                problems.push("no signatures".into());
            }
            return Err(ReleaseError::BadSignature {
                label: label.into(),
                details: problems.join("; "),
            });
        }
        Ok((signed.replace("\r\n", "\n"), good))
    }

    fn verify_one(&self, sig: &Signature, data: &[u8]) -> Result<String, String> {
        if matches!(
            sig.hash_alg(),
            Some(HashAlgorithm::Md5 | HashAlgorithm::Sha1) | None
        ) {
            return Err(format!(
                "signature uses a weak or unknown hash {:?}",
                sig.hash_alg()
            ));
        }
        let Some(made) = sig.created().map(|t| u64::from(t.as_secs())) else {
            return Err("signature has no creation time".into());
        };
        let ids: Vec<_> = sig.issuer_key_id().into_iter().cloned().collect();
        let fps: Vec<_> = sig.issuer_fingerprint().into_iter().cloned().collect();
        let candidates = self.keys.iter().filter(|k| {
            let d = k.key.details();
            (ids.is_empty() && fps.is_empty())
                || ids.contains(&d.legacy_key_id())
                || fps.contains(&d.fingerprint())
        });
        let mut last = format!(
            "no key with id {}",
            ids.iter()
                .map(|i| format!("{i:?}"))
                .collect::<Vec<_>>()
                .join(",")
        );
        for k in candidates {
            if made < k.created || k.expires.is_some_and(|e| made >= e) {
                last = format!(
                    "key of {} was not valid when the signature was made",
                    k.owner
                );
                continue;
            }
            if let Some(d) = sig
                .signature_expiration_time()
                .map(|d| u64::from(d.as_secs()))
                .filter(|&d| d > 0)
            {
                if now() >= made + d {
                    last = format!("signature by {} has expired", k.owner);
                    continue;
                }
            }
            match k.key.verify(sig, data) {
                Ok(()) => return Ok(k.owner.clone()),
                Err(e) => last = format!("signature by {} does not verify: {e}", k.owner),
            }
        }
        Err(last)
    }
}

fn parse_cert(armored: &[u8]) -> Result<SignedPublicKey> {
    let (cert, _) = SignedPublicKey::from_armor_single(Cursor::new(armored))
        .context("parsing an OpenPGP public key")?;
    Ok(cert)
}

/// The newest user-id self-signature that verifies, which carries the key's flags and expiry.
fn newest_self_certification(cert: &SignedPublicKey) -> Option<&Signature> {
    let primary = &cert.primary_key;
    let (kid, fp) = (primary.legacy_key_id(), primary.fingerprint());
    cert.details
        .users
        .iter()
        .flat_map(|u| u.signatures.iter().map(move |s| (u, s)))
        .filter(|(_, s)| s.issuer_key_id().contains(&&kid) || s.issuer_fingerprint().contains(&&fp))
        .filter(|(u, s)| s.verify_certification(primary, Tag::UserId, &u.id).is_ok())
        .map(|(_, s)| s)
        .max_by_key(|s| s.created().map(|t| t.as_secs()))
}

fn expiry(created: u64, sig: &Signature) -> Option<u64> {
    sig.key_expiration_time()
        .map(|d| u64::from(d.as_secs()))
        .filter(|&d| d > 0)
        .map(|d| created + d)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// One index file listed in a Release file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexFile {
    pub sha256: String,
    pub size: u64,
}

/// The verified content of an `InRelease`.
#[derive(Debug, Clone)]
pub struct Release {
    pub fields: Stanza,
    /// Path below `dists/<suite>/` -> digest and size.
    pub sha256: BTreeMap<String, IndexFile>,
    pub acquire_by_hash: bool,
    /// Owners of the keys whose signatures verified.
    pub signed_by: Vec<String>,
}

impl Release {
    /// Verifies `data` with `keyring` and parses the signed text.
    pub fn verify(data: &[u8], keyring: &Keyring, label: &str) -> Result<Release> {
        let (text, signed_by) = keyring.verify_clearsigned(data, label)?;
        Release::parse_signed_text(&text, signed_by, label)
    }

    fn parse_signed_text(text: &str, signed_by: Vec<String>, label: &str) -> Result<Release> {
        let fields = parse_stanzas(text, label)?
            .into_iter()
            .next()
            .unwrap_or_default();
        let mut sha256 = BTreeMap::new();
        for line in fields
            .get("SHA256")
            .unwrap_or("")
            .lines()
            .filter(|l| !l.trim().is_empty())
        {
            let bad = || ReleaseError::BadHashLine {
                label: label.into(),
                line: line.into(),
            };
            let mut w = line.split_whitespace();
            let (Some(h), Some(size), Some(path), None) = (w.next(), w.next(), w.next(), w.next())
            else {
                return Err(bad().into());
            };
            let size = size.parse().map_err(|_| bad())?;
            if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad().into());
            }
            sha256.insert(
                path.to_string(),
                IndexFile {
                    sha256: h.to_ascii_lowercase(),
                    size,
                },
            );
        }
        let acquire_by_hash = fields
            .get("Acquire-By-Hash")
            .is_some_and(|v| v.eq_ignore_ascii_case("yes"));
        Ok(Release {
            fields,
            sha256,
            acquire_by_hash,
            signed_by,
        })
    }

    /// The best available `Packages` index for a component and architecture: xz, then gz, then
    /// plain. Returns the path below `dists/<suite>/` and its digest.
    pub fn packages_index(
        &self,
        component: &str,
        arch: &str,
        label: &str,
    ) -> Result<(String, IndexFile), ReleaseError> {
        let base = format!("{component}/binary-{arch}/Packages");
        for ext in [".xz", ".gz", ""] {
            let p = format!("{base}{ext}");
            if let Some(f) = self.sha256.get(&p) {
                return Ok((p, f.clone()));
            }
        }
        Err(ReleaseError::MissingIndex {
            label: label.into(),
            path: format!("{base}.xz"),
        })
    }

    /// `Valid-Until` as seconds since the epoch, when present and readable.
    pub fn valid_until(&self) -> Option<u64> {
        self.fields.get("Valid-Until").and_then(parse_rfc2822)
    }
}

/// Parses the date format of Release files: `Sat, 21 Nov 2026 09:15:44 UTC`.
pub fn parse_rfc2822(s: &str) -> Option<u64> {
    let s = s.split_once(',').map(|(_, r)| r).unwrap_or(s);
    let mut w = s.split_whitespace();
    let day: u64 = w.next()?.parse().ok()?;
    let month_name = w.next()?;
    let mon = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| *m == month_name)? as u64
        + 1;
    let year: u64 = w.next()?.parse().ok()?;
    let mut hms = w.next()?.split(':').map(|x| x.parse::<u64>().ok());
    let (h, m, sec) = (hms.next()??, hms.next()??, hms.next()??);
    // Days from the civil date (Howard Hinnant's algorithm).
    let (y, mo) = if mon <= 2 {
        (year - 1, mon + 9)
    } else {
        (year, mon - 3)
    };
    let era = y / 400;
    let yoe = y - era * 400;
    let doy = (153 * mo + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    Some(days * 86400 + h * 3600 + m * 60 + sec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_keyring_has_signing_keys() {
        let k = Keyring::debian().unwrap();
        // bookworm + trixie: 3 RSA signing subkeys each side... at least the two archive
        // subkeys and the two Ed25519 release keys.
        assert!(k.len() >= 4, "only {} signing keys", k.len());
    }

    #[test]
    fn unsigned_text_is_refused() {
        let k = Keyring::debian().unwrap();
        let err = k
            .verify_clearsigned(b"Origin: Debian\nSHA256:\n", "x")
            .unwrap_err();
        assert!(matches!(err, ReleaseError::NotSigned { .. }), "{err}");
    }

    #[test]
    fn dates() {
        assert_eq!(
            parse_rfc2822("Sat, 21 Nov 2026 09:15:44 UTC"),
            Some(1_795_252_544)
        );
        assert_eq!(parse_rfc2822("Thu, 01 Jan 1970 00:00:00 UTC"), Some(0));
        assert_eq!(parse_rfc2822("garbage"), None);
    }

    #[test]
    fn signed_text_parsing() {
        let text = "Origin: Debian\nAcquire-By-Hash: yes\nSHA256:\n \
            be3d7d96a040eda0505c1808cccc67f183bbc05dff0842c50f88e6c396557412  9679304 main/binary-amd64/Packages.xz\n \
            2efd6103f013081f8118f4c9f228739bc97bff2e4e1de496f80458c7e72a24ac 56634892 main/binary-amd64/Packages\n";
        let r = Release::parse_signed_text(text, vec![], "t").unwrap();
        assert!(r.acquire_by_hash);
        let (p, f) = r.packages_index("main", "amd64", "t").unwrap();
        assert_eq!(p, "main/binary-amd64/Packages.xz");
        assert_eq!(f.size, 9679304);
        assert!(r.packages_index("contrib", "amd64", "t").is_err());
        let bad = Release::parse_signed_text("SHA256:\n xyz 1 a\n", vec![], "t");
        assert!(bad.is_err());
    }
}

#[cfg(test)]
mod network_tests {
    use super::*;
    use crate::progress::Silent;
    use crate::source::debian::testutil::{mirror_or_skip, shared_cache};

    #[test]
    fn real_inrelease_verifies_and_tampering_fails() {
        let Some(mirror) = mirror_or_skip("real_inrelease_verifies_and_tampering_fails") else {
            return;
        };
        let cache = shared_cache();
        let url = format!("{mirror}/dists/trixie/InRelease");
        let path = cache
            .fetch_url(
                &url,
                "trixie InRelease",
                Some(std::time::Duration::from_secs(86400)),
                &Silent,
            )
            .unwrap();
        let data = std::fs::read(&path).unwrap();
        let keyring = Keyring::debian().unwrap();
        let rel = Release::verify(&data, &keyring, "trixie InRelease").unwrap();
        assert!(
            rel.signed_by.iter().any(|o| o.contains("13/trixie")),
            "{:?}",
            rel.signed_by
        );
        assert!(rel.packages_index("main", "amd64", "t").is_ok());

        // Change one digit of one hash line: every signature must now fail.
        let text = String::from_utf8(data.clone()).unwrap();
        let at = text.find("main/binary-amd64/Packages.xz").unwrap();
        let line_start = text[..at].rfind('\n').unwrap() + 2;
        let mut bytes = data.clone();
        bytes[line_start] = if bytes[line_start] == b'0' {
            b'1'
        } else {
            b'0'
        };
        let err = Release::verify(&bytes, &keyring, "trixie InRelease").unwrap_err();
        assert!(
            matches!(
                err.downcast_ref::<ReleaseError>(),
                Some(ReleaseError::BadSignature { .. })
            ),
            "{err:#}"
        );

        // A keyring without the signers' keys refuses the genuine file.
        let bookworm_only =
            Keyring::from_armored(&[include_bytes!("../keys/debian-archive-bookworm-stable.asc")])
                .unwrap();
        assert!(Release::verify(&data, &bookworm_only, "trixie InRelease").is_err());
    }
}
