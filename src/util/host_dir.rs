//! Host directories read in name order, so that what edgeimg builds from them (overlays,
//! cache keys, copies) never depends on the order a file system lists them in.

use std::fs::DirEntry;
use std::path::Path;

use anyhow::{Context, Result};

/// The entries of `dir`, sorted by file name.
pub fn read_dir_sorted(dir: &Path) -> Result<Vec<DirEntry>> {
    let mut entries: Vec<DirEntry> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .collect::<std::io::Result<_>>()
        .with_context(|| format!("reading {}", dir.display()))?;
    entries.sort_by_key(|e| e.file_name());
    Ok(entries)
}
