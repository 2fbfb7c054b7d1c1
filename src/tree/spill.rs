//! Large file contents kept on disk instead of in memory while the trees are assembled.
//!
//! Unpacking every package into memory made a build's resident memory grow with the size of
//! the image (the kernel package alone holds about 100 MiB of modules). Instead, each regular
//! file from a package at or above [`SPILL_THRESHOLD`] bytes is streamed into its own file in a
//! private temporary directory and put into the tree as [`Content::HostFile`], which the
//! encoders open one at a time. Small files, where a file of their own would cost more than it
//! saves, stay in memory. The directory and everything in it are removed when the [`Spill`] is
//! dropped, on success and on error alike.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result};

use crate::tree::Content;

/// Files this large and larger go to disk.
pub const SPILL_THRESHOLD: u64 = 16 * 1024;

/// A private temporary directory holding spilled file contents.
pub struct Spill {
    dir: tempfile::TempDir,
    next: AtomicU64,
    threshold: u64,
    bytes: AtomicU64,
}

impl Spill {
    /// A new, empty spill directory inside `parent` (which must exist).
    pub fn new_in(parent: &Path) -> Result<Spill> {
        Self::with_threshold(parent, SPILL_THRESHOLD)
    }

    /// [`Spill::new_in`] with another size threshold (tests).
    pub fn with_threshold(parent: &Path, threshold: u64) -> Result<Spill> {
        let dir = tempfile::Builder::new()
            .prefix(".edgeimg-spill-")
            .tempdir_in(parent)
            .with_context(|| {
                format!(
                    "creating a scratch directory in {}: check that it is writable",
                    parent.display()
                )
            })?;
        Ok(Spill {
            dir,
            next: AtomicU64::new(0),
            threshold,
            bytes: AtomicU64::new(0),
        })
    }

    /// Whether a file of `size` bytes should be spilled.
    pub fn wants(&self, size: u64) -> bool {
        size >= self.threshold
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Bytes written to disk so far.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Copies all of `r` into a new file of the directory; returns the content and how many
    /// bytes were read (the caller checks that against what it expected).
    pub fn store(&self, r: &mut dyn Read) -> io::Result<(Content, u64)> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let path: PathBuf = self.dir.path().join(n.to_string());
        let mut f = io::BufWriter::with_capacity(1 << 16, std::fs::File::create(&path)?);
        let size = io::copy(r, &mut f)?;
        f.flush()?;
        self.bytes.fetch_add(size, Ordering::Relaxed);
        Ok((Content::HostFile { path, size }, size))
    }
}

impl std::fmt::Debug for Spill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Spill({})", self.dir.path().display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_contents_and_cleans_up() {
        let parent = tempfile::tempdir().unwrap();
        let spill = Spill::with_threshold(parent.path(), 10).unwrap();
        assert!(!spill.wants(9) && spill.wants(10));
        let (a, n) = spill.store(&mut &b"first file"[..]).unwrap();
        let (b, _) = spill.store(&mut &b"second"[..]).unwrap();
        assert_eq!(n, 10);
        assert_eq!(&a.read_all().unwrap()[..], b"first file");
        assert_eq!(&b.read_all().unwrap()[..], b"second");
        assert_eq!(b.len(), 6);
        assert_eq!(spill.bytes(), 16);
        let dir = spill.path().to_path_buf();
        assert!(dir.starts_with(parent.path()));
        drop(spill);
        assert!(!dir.exists(), "the spill directory outlived its owner");
        assert_eq!(std::fs::read_dir(parent.path()).unwrap().count(), 0);
    }
}
