//! FAT32: a write-once encoder from a [`Tree`](crate::tree::Tree) for the boot partition
//! ([`write_fat32`]), and a small reader/editor ([`FatVolume`]) that `configure`, `inspect` and
//! the smoke checks use to change or read files on an existing image without mounting it.
//!
//! Purpose-built because the `fatfs` crate writes corrupt subdirectories (FACTS.md). The
//! writer lays every chain out contiguously in tree order, so the volume is a pure function
//! of the tree and the [`FatParams`]; the editor changes only the FAT sectors, directory
//! entries and clusters an edit touches.

pub(crate) mod dirent;
mod layout;
mod volume;
mod writer;

#[cfg(test)]
mod tests;

use std::io;

use thiserror::Error;

pub use volume::{DirEntryInfo, FatVolume, ReplaceStats, WalkEntry};
pub use writer::write_fat32;

/// What the writer needs besides the tree.
#[derive(Clone, Debug)]
pub struct FatParams {
    /// Bytes of the partition (rounded down to whole 512-byte sectors).
    pub size: u64,
    /// The volume serial number (derive it from the build seed for determinism).
    pub volume_id: u32,
    /// At most 11 characters; upper-cased and space-padded. Empty means no label.
    pub label: String,
    /// The partition's start LBA, recorded in the BPB ("hidden sectors").
    pub hidden_sectors: u32,
    /// Unix seconds given to every directory entry.
    pub mtime: u64,
}

/// What a write produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FatStats {
    /// Data clusters in the volume.
    pub clusters_total: u32,
    /// Data clusters holding directories and files.
    pub clusters_used: u32,
    /// Bytes actually written to the output (everything else is left as a hole).
    pub bytes_written: u64,
}

#[derive(Debug, Error)]
pub enum FatError {
    #[error(
        "a partition of {size} bytes is too small for FAT32: it needs at least {min} bytes \
         (65525 clusters); make the boot partition bigger"
    )]
    TooSmall { size: u64, min: u64 },
    #[error("a partition of {size} bytes is too large for FAT32 with 512-byte sectors (at most {max} bytes)")]
    TooLarge { size: u64, max: u64 },
    #[error(
        "the boot files need {needed} bytes on disk ({needed_clusters} clusters of {cluster_bytes} bytes) \
         but the {size}-byte partition has room for {available} bytes ({available_clusters} clusters); \
         make the boot partition bigger or put less into it"
    )]
    ContentTooBig {
        size: u64,
        needed: u64,
        available: u64,
        needed_clusters: u64,
        available_clusters: u32,
        cluster_bytes: u32,
    },
    #[error("{path}: a {kind} cannot be stored on a FAT file system; only directories and regular files can")]
    Unsupported { path: String, kind: &'static str },
    #[error("{path}: {size} bytes is more than a FAT32 file can hold (4 GiB - 1)")]
    FileTooLarge { path: String, size: u64 },
    #[error("{path}: the name cannot be used on FAT: {reason}")]
    InvalidName { path: String, reason: String },
    #[error(
        "{dir}: {first:?} and {second:?} differ only in case, and FAT names are case-insensitive; rename one of them"
    )]
    CaseConflict {
        dir: String,
        first: String,
        second: String,
    },
    #[error("{dir}: more than 65536 directory entries, the FAT limit for one directory")]
    DirectoryFull { dir: String },
    #[error("volume label {0:?}: at most 11 ASCII characters, none of \"*+,./:;<=>?[\\]|")]
    InvalidLabel(String),
    #[error("not a FAT32 volume: {0}")]
    NotFat32(String),
    #[error(
        "{what} ends at sector {end}, but its partition holds only {partition} sectors: the \
         file system was made for a bigger partition, or the partition was shrunk after it was \
         made"
    )]
    BeyondPartition {
        what: &'static str,
        end: u64,
        partition: u64,
    },
    #[error("the FAT32 volume is damaged: {0}; check it with `fsck.fat -n`")]
    Corrupt(String),
    #[error("{0}: no such file or directory on the FAT volume")]
    NotFound(String),
    #[error("{0}: not a directory on the FAT volume")]
    NotADirectory(String),
    #[error("{0}: is a directory on the FAT volume")]
    IsADirectory(String),
    #[error("the FAT volume is full: {needed} more clusters needed, {free} free")]
    VolumeFull { needed: u32, free: u32 },
    /// An edit that stopped part way: what the volume holds now.
    #[error("{source}; {state}")]
    Interrupted {
        state: String,
        #[source]
        source: Box<FatError>,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

/// Wraps an I/O error with what was being done.
pub(crate) fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> FatError {
    let context = context.into();
    move |source| FatError::Io { context, source }
}
