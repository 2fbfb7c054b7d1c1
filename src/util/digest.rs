//! sha256 of files, the one digest every input and output of edgeimg is checked by.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

/// The sha256 of a file as lowercase hex, read in 1 MiB pieces.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut hasher = Sha256::new();
    update_with_file(&mut hasher, path)?;
    Ok(hex::encode(hasher.finalize()))
}

/// Feeds the content of the file at `path` to `hasher`, in 1 MiB pieces.
pub fn update_with_file(hasher: &mut Sha256, path: &Path) -> Result<()> {
    let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            return Ok(());
        }
        hasher.update(&buf[..n]);
    }
}
