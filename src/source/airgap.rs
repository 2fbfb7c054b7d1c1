//! The k0s airgap bundle (`--airgap-bundle`): a download checked against its sha256, or a local
//! file hashed (and checked when a sha256 is given), both kept in the cache like k0s itself.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use super::cache::{sha256_file, Cache, CacheError};
use crate::plan::{AirgapInput, AirgapSource};
use crate::progress::Reporter;

/// The bundle a build ships, as recorded in the manifest and the SBOM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AirgapBundle {
    /// The verified file in the cache.
    pub path: PathBuf,
    pub sha256: String,
    /// Where it came from (a URL, or the local path given).
    pub source: String,
    /// Its name on the device.
    pub file_name: String,
}

/// Fetches (or imports) the airgap bundle; on a digest mismatch nothing is kept.
pub fn fetch_airgap(
    cache: &Cache,
    input: &AirgapInput,
    rep: &dyn Reporter,
) -> Result<AirgapBundle> {
    let label = format!("airgap bundle {}", input.file_name);
    let (path, sha256, source) = match &input.source {
        AirgapSource::Url { url, sha256 } => {
            let path = cache
                .fetch_verified(url, sha256, None, &label, rep)
                .map_err(|e| match e.downcast_ref::<CacheError>() {
                    Some(CacheError::DigestMismatch {
                        actual, expected, ..
                    }) => anyhow::anyhow!(
                        "--airgap-bundle {url}: sha256 is {actual}, expected {expected} \
                         (--airgap-sha256): check the digest or the URL"
                    ),
                    _ => e,
                })?;
            (path, sha256.clone(), url.clone())
        }
        AirgapSource::LocalFile { path, sha256 } => {
            if !path.is_file() {
                bail!("--airgap-bundle {}: no such file", path.display());
            }
            if let Some(expected) = sha256 {
                // Hashed before anything is copied: a wrong file leaves the cache as it was.
                let actual = sha256_file(path)
                    .with_context(|| format!("--airgap-bundle {}", path.display()))?;
                if &actual != expected {
                    bail!(
                        "--airgap-bundle {}: sha256 is {actual}, expected {expected} \
                         (--airgap-sha256): check the digest or the file",
                        path.display()
                    );
                }
            }
            let (cached, actual) =
                cache.import_unpinned(&path.display().to_string(), &label, rep)?;
            if let Some(expected) = sha256 {
                if &actual != expected {
                    bail!(
                        "--airgap-bundle {}: changed while it was read (sha256 {actual}, \
                         expected {expected})",
                        path.display()
                    );
                }
            }
            (cached, actual, path.display().to_string())
        }
    };
    rep.step(&format!("{label}: sha256 {sha256}"));
    Ok(AirgapBundle {
        path,
        sha256,
        source,
        file_name: input.file_name.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::Silent;
    use sha2::{Digest, Sha256};

    fn local(path: PathBuf, sha256: Option<String>) -> AirgapInput {
        AirgapInput {
            file_name: "bundle.tar".into(),
            source: AirgapSource::LocalFile { path, sha256 },
        }
    }

    #[test]
    fn local_bundle_is_checked_then_cached() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("bundle.tar");
        std::fs::write(&f, b"oci layout").unwrap();
        let cache = Cache::new(dir.path().join("c"), false).unwrap();
        let good = hex::encode(Sha256::digest(b"oci layout"));
        let b = fetch_airgap(&cache, &local(f.clone(), Some(good.clone())), &Silent).unwrap();
        assert_eq!(b.sha256, good);
        assert_eq!(std::fs::read(&b.path).unwrap(), b"oci layout");
        let unpinned = fetch_airgap(&cache, &local(f.clone(), None), &Silent).unwrap();
        assert_eq!(unpinned.sha256, good);
    }

    #[test]
    fn wrong_digest_names_flag_and_both_digests_and_caches_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("bundle.tar");
        std::fs::write(&f, b"oci layout").unwrap();
        let cache = Cache::new(dir.path().join("c"), false).unwrap();
        let wrong = "0".repeat(64);
        let msg = format!(
            "{:#}",
            fetch_airgap(&cache, &local(f, Some(wrong.clone())), &Silent).unwrap_err()
        );
        let actual = hex::encode(Sha256::digest(b"oci layout"));
        assert!(msg.contains("--airgap-sha256"), "{msg}");
        assert!(msg.contains(&wrong) && msg.contains(&actual), "{msg}");
        let kept = std::fs::read_dir(dir.path().join("c/sha256"))
            .map(|d| d.count())
            .unwrap_or(0);
        assert_eq!(kept, 0);
    }
}
