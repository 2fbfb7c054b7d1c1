//! The squashfs encoder alone, on a folder of the host: what `scripts/bench` times against
//! `mksquashfs` on the same folder (hidden command `edgeimg encode-squashfs`). A build may
//! reuse an encoded root from its cache; this always encodes.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use serde::Serialize;

use super::squashfs::{write_squashfs_threads, SquashCompressor, SquashfsOptions};
use crate::tree::{Content, Entry, Tree, TreePath};

/// What to encode, and how.
#[derive(Debug, Clone)]
pub struct EncodeSquashfs {
    /// Folder to encode (its files are read in place; owners become root).
    pub dir: PathBuf,
    /// The squashfs file to write.
    pub out: PathBuf,
    /// zstd level.
    pub level: u32,
    /// Block size in bytes.
    pub block_size: u32,
    /// Compression threads (default: all cores).
    pub threads: Option<usize>,
}

#[derive(Debug, Serialize)]
pub struct EncodeReport {
    /// Seconds spent encoding (reading the folder into a tree not included, as in a build).
    pub seconds: f64,
    pub bytes: u64,
    pub entries: usize,
    pub content_bytes: u64,
    pub threads: usize,
    /// Blocks compressed ahead on the pool, and how many of them the writer used.
    pub blocks_ahead: u64,
    pub blocks_used: u64,
    pub blocks_inline: u64,
}

/// Reads `args.dir` into a tree and encodes it into `args.out`.
pub fn encode_dir(args: &EncodeSquashfs) -> Result<EncodeReport> {
    let tree = read_dir_tree(&args.dir)?;
    let opts = SquashfsOptions {
        compressor: SquashCompressor::Zstd { level: args.level },
        block_size: args.block_size,
        mtime: 0,
    };
    let threads = args.threads.unwrap_or_else(rayon::current_num_threads);
    let mut out = std::fs::File::create(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let started = Instant::now();
    let (bytes, stats) =
        write_squashfs_threads(&tree, &opts, threads, &mut out).with_context(|| {
            format!(
                "encoding {} into {}",
                args.dir.display(),
                args.out.display()
            )
        })?;
    out.sync_data()
        .with_context(|| format!("writing {}", args.out.display()))?;
    Ok(EncodeReport {
        seconds: started.elapsed().as_secs_f64(),
        bytes,
        entries: tree.len(),
        content_bytes: tree.content_size(),
        threads,
        blocks_ahead: stats.ahead,
        blocks_used: stats.used,
        blocks_inline: stats.inline,
    })
}

/// Directories, regular files (left on the host) and symlinks below `top`, with their modes.
/// Other kinds (devices, sockets) are skipped: an unprivileged unsquashfs does not make them.
pub fn read_dir_tree(top: &Path) -> Result<Tree> {
    let mut tree = Tree::new();
    let meta = std::fs::metadata(top).with_context(|| format!("reading {}", top.display()))?;
    tree.insert(&TreePath::root(), Entry::dir(meta.mode() & 0o7777))?;
    walk(top, top, &mut tree)?;
    Ok(tree)
}

fn walk(top: &Path, dir: &Path, tree: &mut Tree) -> Result<()> {
    for e in crate::util::host_dir::read_dir_sorted(dir)? {
        let path = e.path();
        let rel = path.strip_prefix(top).expect("below top").to_string_lossy();
        let meta = std::fs::symlink_metadata(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let mode = meta.permissions().mode() & 0o7777;
        let tp = TreePath::new(&rel)?;
        if meta.is_dir() {
            tree.insert(&tp, Entry::dir(mode))?;
            walk(top, &path, tree)?;
        } else if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&path)?;
            tree.insert(&tp, Entry::symlink(&target.to_string_lossy()))?;
        } else if meta.is_file() {
            let content = Content::HostFile {
                path: path.clone(),
                size: meta.len(),
            };
            tree.insert(&tp, Entry::file(content, mode))?;
        }
    }
    Ok(())
}
