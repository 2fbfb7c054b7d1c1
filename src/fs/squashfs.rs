//! The read-only root filesystem: a [`Tree`] encoded as squashfs 4.0 with backhand.
//!
//! Everything about ownership and device nodes comes from the tree, never from the host, so no
//! root is needed. Files whose bytes sit on the host are opened only when backhand writes them
//! (one at a time), not read into memory up front. backhand lays the filesystem out on one
//! thread; the blocks it compresses are compressed ahead on all cores by
//! [`super::squashfs_par`], with the same bytes as a result.

use std::io::{Cursor, Seek, Write};

use anyhow::{bail, Context, Result};
use backhand::compression::{CompressionOptions, Compressor, Zstd};
use backhand::{FilesystemCompressor, FilesystemWriter, NodeHeader};
use serde::Serialize;

use super::squashfs_par;
use crate::tree::{Content, Entry, Kind, Tree};

pub use crate::util::window::OffsetWriter;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SquashCompressor {
    Zstd { level: u32 },
    Xz,
    Gzip,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct SquashfsOptions {
    pub compressor: SquashCompressor,
    /// Data block size: a power of two from 4 KiB to 1 MiB (squashfs' limits).
    pub block_size: u32,
    /// Every inode's mtime and the superblock time: fixed by the caller for reproducible output.
    pub mtime: u32,
}

impl Default for SquashfsOptions {
    fn default() -> Self {
        SquashfsOptions {
            compressor: SquashCompressor::Zstd { level: 15 },
            block_size: 128 * 1024,
            mtime: 0,
        }
    }
}

/// Encodes `tree` as squashfs into `out`, whose position 0 is the filesystem start (wrap a
/// partition in an [`OffsetWriter::bounded`]). Returns the bytes written, padding to 4 KiB included.
pub fn write_squashfs<W: Write + Seek>(
    tree: &Tree,
    opts: &SquashfsOptions,
    out: &mut W,
) -> Result<u64> {
    let threads = rayon::current_num_threads();
    write_squashfs_threads(tree, opts, threads, out).map(|(written, _)| written)
}

/// [`write_squashfs`] compressing on `threads` threads; the output does not depend on them.
/// Also returns how the blocks were compressed. `threads` 0 leaves all compression to backhand
/// on this thread (for comparison).
pub fn write_squashfs_threads<W: Write + Seek>(
    tree: &Tree,
    opts: &SquashfsOptions,
    threads: usize,
    out: &mut W,
) -> Result<(u64, squashfs_par::Stats)> {
    let files = tree
        .iter()
        .filter_map(|(path, entry)| match &entry.kind {
            Kind::File(content) => Some((path.as_str(), content)),
            _ => None,
        })
        .collect();
    write_walking(tree, opts, threads, files, out)
}

/// [`write_squashfs_threads`], compressing ahead the blocks of `files` (the tree's files,
/// unless a test wants a wrong guess).
pub(crate) fn write_walking<W: Write + Seek>(
    tree: &Tree,
    opts: &SquashfsOptions,
    threads: usize,
    files: Vec<(&str, &Content)>,
    out: &mut W,
) -> Result<(u64, squashfs_par::Stats)> {
    let block_size = checked_block_size(opts.block_size)?;
    let fc = compressor(opts.compressor)?;
    let mut fs = FilesystemWriter::default();
    if threads > 0 {
        fs.set_kind(squashfs_par::kind());
    }
    fs.set_block_size(block_size);
    fs.set_time(opts.mtime);
    fs.set_compressor(fc);

    for (path, entry) in tree.iter() {
        if path.is_root() {
            // backhand keeps the root's mtime at 0; its mode and owner come from the tree.
            fs.set_root_mode(entry.mode as u16);
            fs.set_root_uid(entry.uid);
            fs.set_root_gid(entry.gid);
            continue;
        }
        push(&mut fs, path.as_str(), entry, opts.mtime)
            .with_context(|| format!("adding {path} to the squashfs"))?;
    }

    let zstd_level = match opts.compressor {
        SquashCompressor::Zstd { level } => Some(level as i32),
        _ => None,
    };
    if threads == 0 {
        let (_superblock, written) = fs.write(out).context("writing the squashfs")?;
        return Ok((written, Default::default()));
    }
    let (written, stats) =
        squashfs_par::with_precompression(files, zstd_level, fc, block_size, threads, || {
            fs.write(out)
        })
        .context("starting the squashfs compression threads")?;
    let (_superblock, written) = written.context("writing the squashfs")?;
    Ok((written, stats))
}

/// Adds one entry. The tree iterates parents before children, which backhand requires.
fn push<'c>(
    fs: &mut FilesystemWriter<'_, '_, 'c>,
    path: &'c str,
    entry: &'c Entry,
    mtime: u32,
) -> Result<()> {
    let header = NodeHeader::new(entry.mode as u16, entry.uid, entry.gid, mtime);
    match &entry.kind {
        Kind::Dir => fs.push_dir(path, header)?,
        Kind::File(Content::Bytes(bytes)) => {
            fs.push_file(Cursor::new(bytes.clone()), path, header)?
        }
        Kind::File(Content::HostFile { path: source, .. }) => {
            fs.push_file_from_path(source.clone(), path, header)?
        }
        Kind::Symlink(target) => fs.push_symlink(target.as_str(), path, header)?,
        Kind::CharDevice { major, minor } => {
            fs.push_char_device(device_number(*major, *minor)?, path, header)?
        }
        Kind::BlockDevice { major, minor } => {
            fs.push_block_device(device_number(*major, *minor)?, path, header)?
        }
        Kind::Fifo => fs.push_fifo(path, header)?,
        Kind::Socket => fs.push_socket(path, header)?,
    }
    Ok(())
}

/// The kernel's `new_encode_dev`, which squashfs stores as a raw u32.
fn device_number(major: u32, minor: u32) -> Result<u32> {
    if major > 0xfff || minor > 0xfffff {
        bail!("device number {major}:{minor} does not fit squashfs' 32-bit encoding (12-bit major, 20-bit minor)");
    }
    Ok((minor & 0xff) | (major << 8) | ((minor & !0xff) << 12))
}

fn checked_block_size(size: u32) -> Result<u32> {
    if !size.is_power_of_two()
        || !(backhand::MIN_BLOCK_SIZE..=backhand::MAX_BLOCK_SIZE).contains(&size)
    {
        bail!(
            "squashfs block size {size} is invalid: use a power of two from {} to {}",
            backhand::MIN_BLOCK_SIZE,
            backhand::MAX_BLOCK_SIZE
        );
    }
    Ok(size)
}

fn compressor(c: SquashCompressor) -> Result<FilesystemCompressor> {
    let fc = match c {
        SquashCompressor::Zstd { level } => {
            if !(1..=22).contains(&level) {
                bail!("zstd level {level} is invalid: use 1 to 22");
            }
            // The level goes into the image's compressor options, as mksquashfs writes it.
            let options = CompressionOptions::Zstd(Zstd {
                compression_level: level,
            });
            FilesystemCompressor::new(Compressor::Zstd, Some(options))?
        }
        SquashCompressor::Xz => FilesystemCompressor::new(Compressor::Xz, None)?,
        SquashCompressor::Gzip => FilesystemCompressor::new(Compressor::Gzip, None)?,
    };
    Ok(fc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::TreePath;
    use crate::util::test_tools::{require_tool, run_tool};
    use std::fs::File;

    fn sample_tree(host_file: &std::path::Path, with_devices: bool) -> Tree {
        let mut t = Tree::new();
        t.add_dir("etc", 0o755).unwrap();
        t.add_file("etc/hostname", b"edge\n".to_vec(), 0o644)
            .unwrap();
        t.insert(
            &TreePath::new("etc/shadow").unwrap(),
            Entry::file(Content::bytes(b"root:*:1::::::\n".to_vec()), 0o640).owned(0, 42),
        )
        .unwrap();
        t.add_dir("home/user", 0o700).unwrap();
        t.insert(
            &TreePath::new("home/user").unwrap(),
            Entry::dir(0o700).owned(1000, 1000),
        )
        .unwrap();
        t.add_file("usr/bin/su", b"\x7fELF fake".to_vec(), 0o4755)
            .unwrap();
        let size = std::fs::metadata(host_file).unwrap().len();
        t.insert(
            &TreePath::new("usr/bin/k0s").unwrap(),
            Entry::file(
                Content::HostFile {
                    path: host_file.to_path_buf(),
                    size,
                },
                0o755,
            ),
        )
        .unwrap();
        t.add_symlink("lib", "usr/lib").unwrap();
        t.add_dir("usr/lib", 0o755).unwrap();
        t.add_file("usr/lib/empty", Vec::new(), 0o600).unwrap();
        if with_devices {
            let dev = |kind| Entry {
                kind,
                mode: 0o660,
                uid: 0,
                gid: 6,
                mtime: 99,
            };
            t.insert(
                &TreePath::new("dev/console").unwrap(),
                dev(Kind::CharDevice { major: 5, minor: 1 }),
            )
            .unwrap();
            t.insert(
                &TreePath::new("dev/sda1").unwrap(),
                dev(Kind::BlockDevice { major: 8, minor: 1 }),
            )
            .unwrap();
            t.insert(
                &TreePath::new("dev/big").unwrap(),
                dev(Kind::CharDevice {
                    major: 511,
                    minor: 300_000,
                }),
            )
            .unwrap();
            t.insert(&TreePath::new("run/initctl").unwrap(), dev(Kind::Fifo))
                .unwrap();
        }
        t
    }

    fn host_file(dir: &std::path::Path) -> std::path::PathBuf {
        let p = dir.join("k0s-test-double");
        // Several blocks plus a fragment, not compressible to nothing.
        let mut x = 0x9e3779b97f4a7c15u64;
        let data: Vec<u8> = (0..400_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        std::fs::write(&p, data).unwrap();
        p
    }

    fn encode(tree: &Tree, opts: &SquashfsOptions, path: &std::path::Path) -> u64 {
        let mut f = File::create(path).unwrap();
        write_squashfs(tree, opts, &mut f).unwrap()
    }

    #[test]
    fn device_numbers_use_the_kernel_encoding() {
        assert_eq!(device_number(8, 1).unwrap(), 0x801);
        assert_eq!(
            device_number(511, 300_000).unwrap(),
            (300_000 & 0xff) | (511 << 8) | ((300_000 & !0xff) << 12)
        );
        assert!(device_number(4096, 0).is_err());
    }

    #[test]
    fn unsquashfs_lists_modes_owners_links_and_devices() {
        require_tool("unsquashfs");
        let dir = tempfile::tempdir().unwrap();
        let tree = sample_tree(&host_file(dir.path()), true);
        let img = dir.path().join("root.sqfs");
        let opts = SquashfsOptions {
            mtime: 1_700_000_000,
            ..Default::default()
        };
        let n = encode(&tree, &opts, &img);
        assert_eq!(n, std::fs::metadata(&img).unwrap().len());
        assert_eq!(n % 4096, 0);

        let listing = run_tool("unsquashfs", &["-lln", img.to_str().unwrap()]);
        let line = |name: &str| -> String {
            let suffix = format!("squashfs-root/{name}");
            listing
                .lines()
                .find(|l| l.ends_with(&suffix) || l.contains(&format!("{suffix} -> ")))
                .unwrap_or_else(|| panic!("{name} missing from:\n{listing}"))
                .to_string()
        };
        let cols = |name: &str| {
            line(name)
                .split_whitespace()
                .map(String::from)
                .collect::<Vec<_>>()
        };
        assert_eq!(cols("etc/shadow")[..3], ["-rw-r-----", "0/42", "15"]);
        assert_eq!(cols("home/user")[..2], ["drwx------", "1000/1000"]);
        assert_eq!(cols("usr/bin/su")[0], "-rwsr-xr-x");
        assert_eq!(cols("usr/bin/k0s")[2], "400000");
        assert!(
            line("lib").starts_with("lrwxrwxrwx") && line("lib").ends_with("lib -> usr/lib"),
            "{}",
            line("lib")
        );
        assert_eq!(cols("dev/console")[..4], ["crw-rw----", "0/6", "5,", "1"]);
        assert_eq!(cols("dev/sda1")[..4], ["brw-rw----", "0/6", "8,", "1"]);
        // The kernel decodes rdev with new_decode_dev; unsquashfs' listing prints the old
        // 8-bit split (rdev >> 8, rdev & 0xff), so a large minor shows this way.
        let big = device_number(511, 300_000).unwrap();
        let compact = cols("dev/big").join(" ").replace(", ", ",");
        assert!(
            compact.contains(&format!(" {},{} ", big >> 8, big & 0xff)),
            "{compact}"
        );
        assert!(cols("run/initctl")[0].starts_with("prw-rw----"));
        // Every inode carries the fixed time, not the tree's (99) or the clock.
        assert!(
            line("dev/sda1").contains("2023-11-14"),
            "{}",
            line("dev/sda1")
        );
        assert!(
            line("etc/hostname").contains("2023-11-14"),
            "{}",
            line("etc/hostname")
        );
    }

    #[test]
    fn extraction_gives_the_same_bytes_and_output_is_reproducible() {
        require_tool("unsquashfs");
        let dir = tempfile::tempdir().unwrap();
        let host = host_file(dir.path());
        let tree = sample_tree(&host, false);
        for opts in [
            SquashfsOptions::default(),
            SquashfsOptions {
                compressor: SquashCompressor::Xz,
                block_size: 4096,
                mtime: 5,
            },
            SquashfsOptions {
                compressor: SquashCompressor::Gzip,
                block_size: 1 << 20,
                mtime: 5,
            },
        ] {
            let a = dir.path().join("a.sqfs");
            let b = dir.path().join("b.sqfs");
            encode(&tree, &opts, &a);
            encode(&tree, &opts, &b);
            assert!(
                std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(),
                "two runs differ with {opts:?}"
            );

            let out = dir.path().join("x");
            let _ = std::fs::remove_dir_all(&out);
            run_tool(
                "unsquashfs",
                &[
                    "-no-xattrs",
                    "-d",
                    out.to_str().unwrap(),
                    a.to_str().unwrap(),
                ],
            );
            assert!(
                std::fs::read(out.join("usr/bin/k0s")).unwrap() == std::fs::read(&host).unwrap()
            );
            assert_eq!(std::fs::read(out.join("etc/hostname")).unwrap(), b"edge\n");
            assert_eq!(std::fs::read(out.join("usr/lib/empty")).unwrap(), b"");
            assert_eq!(
                std::fs::read_link(out.join("lib")).unwrap(),
                std::path::Path::new("usr/lib")
            );
            let stat = run_tool("unsquashfs", &["-s", a.to_str().unwrap()]);
            assert!(
                stat.contains(&format!("Block size {}", opts.block_size)),
                "{stat}"
            );
        }
    }

    #[test]
    fn writes_inside_a_partition_window() {
        require_tool("unsquashfs");
        let dir = tempfile::tempdir().unwrap();
        let tree = sample_tree(&host_file(dir.path()), false);
        let img = dir.path().join("disk.img");
        let mut f = File::create(&img).unwrap();
        f.set_len(4 << 20).unwrap();
        let opts = SquashfsOptions {
            compressor: SquashCompressor::Zstd { level: 3 },
            ..Default::default()
        };
        let mut w = OffsetWriter::bounded(&mut f, 1 << 20, 2 << 20).unwrap();
        write_squashfs(&tree, &opts, &mut w).unwrap();
        drop(f);
        let listing = run_tool(
            "unsquashfs",
            &["-o", "1048576", "-lln", img.to_str().unwrap()],
        );
        assert!(listing.contains("squashfs-root/usr/bin/k0s"), "{listing}");

        // A window too small is an error, not a partition overrun.
        let mut f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
        let mut w = OffsetWriter::bounded(&mut f, 1 << 20, 64 * 1024).unwrap();
        let err = write_squashfs(&tree, &opts, &mut w).unwrap_err();
        assert!(format!("{err:#}").contains("full"), "{err:#}");
    }

    #[test]
    fn bad_options_are_refused() {
        let tree = Tree::new();
        let mut sink = Cursor::new(Vec::new());
        let bad_block = SquashfsOptions {
            block_size: 3000,
            ..Default::default()
        };
        assert!(write_squashfs(&tree, &bad_block, &mut sink).is_err());
        let bad_level = SquashfsOptions {
            compressor: SquashCompressor::Zstd { level: 0 },
            ..Default::default()
        };
        assert!(write_squashfs(&tree, &bad_level, &mut sink).is_err());
    }
}
