//! The artifact cache: results of expensive build steps, kept under `<cache>/artifacts/`,
//! content-addressed (named by a digest of everything that went into them), written
//! atomically and checked against a recorded digest every time they are used. A damaged
//! entry is a miss: it is rebuilt and replaced, never used.
//!
//! - `xz/`: encoded `.xz` blocks, keyed by the sha256 of the block's input bytes
//!   ([`crate::disk::xz_blocks::BlockCache`]), so an unchanged region of an image is not compressed twice.
//! - `root/`: the root squashfs, the initramfs and the few kernel/boot files the boot
//!   partition needs ([`crate::cache::root`]), keyed by a digest of the inputs.

pub mod closure;
pub mod root;

use std::path::{Path, PathBuf};

/// The directory of the artifact cache inside a cache directory.
pub fn dir(cache_root: &Path) -> PathBuf {
    cache_root.join("artifacts")
}
