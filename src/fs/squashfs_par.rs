//! Block compression for the squashfs writer on all cores.
//!
//! backhand lays the filesystem out on one thread and calls its compressor once per data
//! block, fragment block and metadata block, in an order fixed by the tree: files sorted by
//! path; each file's full blocks (an all-zero block is a hole and is not compressed); a file
//! smaller than one block goes into the fragment buffer, which is compressed when the next
//! one no longer fits, and once more at the end. [`with_precompression`] walks the same files
//! in the same order on a thread of its own, ahead of backhand, and compresses those blocks
//! on a rayon pool; backhand's compressor ([`PRECOMPRESSED`]) then takes the results in order.
//!
//! Each result keeps the bytes it was made from, and backhand's request is compared with them
//! byte for byte: anything else (the compressor options, metadata blocks, or a request this
//! walk did not foresee) is compressed on the spot with the same function. So the output is
//! the same bytes whatever the number of threads or their timing, and a wrong guess here costs
//! time, never correctness. At most [`WINDOW`] blocks are queued ahead of backhand, so memory
//! stays bounded whatever the tree's size.

use std::cell::RefCell;
use std::io::Read;
use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;

use backhand::compression::{CompressionAction, Compressor, DefaultCompressor};
use backhand::kind::Kind;
use backhand::{BackhandError, FilesystemCompressor, SuperBlock};

use crate::tree::Content;

/// Blocks compressed (or being compressed) ahead of the writer: about 2 x WINDOW x block size
/// of memory at most (input and output of each).
pub const WINDOW: usize = 48;

/// How many of the blocks compressed ahead were used by the writer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Blocks the walk compressed ahead.
    pub ahead: u64,
    /// Requests of the writer answered from those.
    pub used: u64,
    /// Requests of the writer compressed on its own thread (options, metadata, surprises).
    pub inline: u64,
}

/// The compressor backhand is given: answers from the running precompression of this thread,
/// else compresses itself.
pub struct Precompressed;

/// The one instance ([`Kind::new_v4`] wants a `'static` reference); its state is per thread.
pub static PRECOMPRESSED: Precompressed = Precompressed;

/// A kind (little-endian squashfs 4.0, as backhand's default) that compresses with
/// [`PRECOMPRESSED`].
pub fn kind() -> Kind {
    Kind::new_v4(&PRECOMPRESSED)
}

struct Job {
    input: Arc<Vec<u8>>,
    output: Receiver<Result<Vec<u8>, BackhandError>>,
}

struct Active {
    queue: Receiver<Job>,
    front: Option<Job>,
    zstd_level: Option<i32>,
    stats: Stats,
}

thread_local! {
    static ACTIVE: RefCell<Option<Active>> = const { RefCell::new(None) };
    static ZSTD: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(None) };
}

impl Active {
    /// The result computed ahead for exactly `bytes`, if the next one is for them.
    fn take(&mut self, bytes: &[u8]) -> Option<Result<Vec<u8>, BackhandError>> {
        if self.front.is_none() {
            // Blocks until the walk has queued its next block, or has ended.
            self.front = self.queue.recv().ok();
        }
        if self.front.as_ref()?.input.as_slice() != bytes {
            return None;
        }
        let job = self.front.take()?;
        // A worker that panicked dropped its sender: compress here instead.
        let out = job.output.recv().ok()?;
        self.stats.used += 1;
        Some(out)
    }
}

impl CompressionAction for Precompressed {
    type Error = BackhandError;
    type Compressor = Compressor;
    type FilesystemCompressor = FilesystemCompressor;
    type SuperBlock = SuperBlock;

    fn decompress(
        &self,
        bytes: &[u8],
        out: &mut Vec<u8>,
        compressor: Compressor,
    ) -> Result<(), BackhandError> {
        DefaultCompressor.decompress(bytes, out, compressor)
    }

    fn compress(
        &self,
        bytes: &[u8],
        fc: FilesystemCompressor,
        block_size: u32,
    ) -> Result<Vec<u8>, BackhandError> {
        let (ready, level) = ACTIVE.with(|a| match a.borrow_mut().as_mut() {
            Some(active) => {
                let ready = active.take(bytes);
                if ready.is_none() {
                    active.stats.inline += 1;
                }
                (ready, active.zstd_level)
            }
            None => (None, None),
        });
        match ready {
            Some(out) => out,
            None => compress_block(bytes, level, fc, block_size),
        }
    }

    fn compression_options(
        &self,
        superblock: &mut SuperBlock,
        kind: &backhand::kind::Kind,
        fs_compressor: FilesystemCompressor,
    ) -> Result<Option<Vec<u8>>, BackhandError> {
        DefaultCompressor.compression_options(superblock, kind, fs_compressor)
    }
}

/// Compresses one block: zstd with a context kept per thread (one frame per block, as
/// backhand does; the same bytes as a fresh context), anything else with backhand's own code.
fn compress_block(
    bytes: &[u8],
    zstd_level: Option<i32>,
    fc: FilesystemCompressor,
    block_size: u32,
) -> Result<Vec<u8>, BackhandError> {
    let Some(level) = zstd_level else {
        return DefaultCompressor.compress(bytes, fc, block_size);
    };
    ZSTD.with(|z| {
        let mut z = z.borrow_mut();
        if z.as_ref().map(|(l, _)| *l) != Some(level) {
            *z = Some((level, zstd::bulk::Compressor::new(level)?));
        }
        let (_, c) = z.as_mut().expect("set above");
        let mut buf = Vec::with_capacity(zstd::zstd_safe::compress_bound(bytes.len()));
        c.compress_to_buffer(bytes, &mut buf)?;
        Ok(buf)
    })
}

/// Runs `write` (which must run backhand's `FilesystemWriter::write` on this thread, with
/// [`kind`] set) while the blocks of `files` are compressed ahead on `threads` threads.
/// `files` are the file paths (relative, as pushed to backhand) with their contents.
pub fn with_precompression<R>(
    files: Vec<(&str, &Content)>,
    zstd_level: Option<i32>,
    fc: FilesystemCompressor,
    block_size: u32,
    threads: usize,
    write: impl FnOnce() -> R,
) -> std::io::Result<(R, Stats)> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .thread_name(|i| format!("squashfs-{i}"))
        .build()
        .map_err(std::io::Error::other)?;
    let mut files = files;
    // backhand keeps its nodes sorted by path, component by component.
    files.sort_by(|a, b| Path::new(a.0).cmp(Path::new(b.0)));
    let contents: Vec<&Content> = files.into_iter().map(|(_, c)| c).collect();

    let (tx, rx) = sync_channel::<Job>(WINDOW);
    std::thread::scope(|s| {
        let walker = s.spawn(|| {
            let mut walk = Walk {
                pool: &pool,
                queue: tx,
                zstd_level,
                fc,
                block_size: block_size as usize,
                ahead: 0,
            };
            // A file that cannot be read ends the walk; backhand reports the error itself.
            let _ = walk.files(&contents);
            walk.ahead
        });
        let _guard = Deactivate;
        ACTIVE.with(|a| {
            *a.borrow_mut() = Some(Active {
                queue: rx,
                front: None,
                zstd_level,
                stats: Stats::default(),
            })
        });
        let result = write();
        // Dropping the queue ends a walk still waiting to queue a block.
        let mut stats = ACTIVE
            .with(|a| a.borrow_mut().take())
            .map(|a| a.stats)
            .unwrap_or_default();
        stats.ahead = walker.join().unwrap_or(0);
        Ok((result, stats))
    })
}

/// Clears this thread's precompression even when the writer panics, so the walk ends.
struct Deactivate;

impl Drop for Deactivate {
    fn drop(&mut self) {
        let _ = ACTIVE.try_with(|a| a.borrow_mut().take());
    }
}

struct Walk<'p> {
    pool: &'p rayon::ThreadPool,
    queue: SyncSender<Job>,
    zstd_level: Option<i32>,
    fc: FilesystemCompressor,
    block_size: usize,
    ahead: u64,
}

/// Why the walk stopped early.
enum Stop {
    /// The writer is gone (done, failed or found a surprise): nothing more is wanted.
    Gone,
    Io,
}

impl From<std::io::Error> for Stop {
    fn from(_: std::io::Error) -> Self {
        Stop::Io
    }
}

impl Walk<'_> {
    /// Mirrors backhand's `DataWriter::add_bytes` for every file, then its final fragment.
    fn files(&mut self, contents: &[&Content]) -> Result<(), Stop> {
        let mut fragment: Vec<u8> = Vec::with_capacity(self.block_size);
        for content in contents {
            let mut reader = content.open()?;
            let mut chunk = self.read_chunk(&mut reader)?;
            if chunk.is_empty() {
                continue;
            }
            if chunk.len() != self.block_size {
                if chunk.len() + fragment.len() > self.block_size {
                    let full =
                        std::mem::replace(&mut fragment, Vec::with_capacity(self.block_size));
                    self.submit(full)?;
                }
                fragment.extend_from_slice(&chunk);
                continue;
            }
            while !chunk.is_empty() {
                if chunk.iter().any(|b| *b != 0) {
                    self.submit(chunk)?;
                }
                chunk = self.read_chunk(&mut reader)?;
            }
        }
        self.submit(fragment)
    }

    /// Up to one block: fewer bytes only at the end of the file.
    fn read_chunk(&self, reader: &mut dyn Read) -> std::io::Result<Vec<u8>> {
        let mut chunk = Vec::with_capacity(self.block_size);
        reader
            .take(self.block_size as u64)
            .read_to_end(&mut chunk)?;
        Ok(chunk)
    }

    fn submit(&mut self, input: Vec<u8>) -> Result<(), Stop> {
        let input = Arc::new(input);
        let (tx, output) = sync_channel(1);
        let (data, level, fc, block_size) = (
            Arc::clone(&input),
            self.zstd_level,
            self.fc,
            self.block_size as u32,
        );
        self.pool.spawn(move || {
            let _ = tx.send(compress_block(&data, level, fc, block_size));
        });
        self.ahead += 1;
        self.queue
            .send(Job { input, output })
            .map_err(|_| Stop::Gone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::squashfs::{write_squashfs_threads, SquashCompressor, SquashfsOptions};
    use crate::fs::squashfs_bench::read_dir_tree;
    use crate::tree::{Entry, Tree, TreePath};
    use crate::util::test_tools::{require_tool, run_tool};
    use std::path::PathBuf;

    /// Text-like bytes (compressible, as most of a root filesystem), or noise.
    fn bytes(seed: u64, len: usize, text: bool) -> Vec<u8> {
        const WORDS: [&str; 16] = [
            "kernel ",
            "node ",
            "the ",
            "k0s ",
            "config\n",
            "image ",
            "0x7f3a ",
            "usr/lib/ ",
            "edge ",
            "= 1;\n",
            "worker ",
            "systemd ",
            "ELF ",
            "\0\0\0\0",
            "boot ",
            "static ",
        ];
        let mut x = seed.wrapping_mul(0x9e3779b97f4a7c15) | 1;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut out = Vec::with_capacity(len + 16);
        while out.len() < len {
            let r = next();
            if text {
                out.extend_from_slice(WORDS[(r % 16) as usize].as_bytes());
            } else {
                out.extend_from_slice(&r.to_le_bytes());
            }
        }
        out.truncate(len);
        out
    }

    /// A folder with what makes backhand's block order interesting: files of several blocks,
    /// a block of zeros (a hole), a file of exactly one block, many small files that fill
    /// several fragment blocks, empty files, a duplicate, and names whose byte order differs
    /// from path order (`a-b` sorts after `a/…` as a path, before it as a string).
    fn sample_dir(top: &Path, block: usize) -> Vec<(PathBuf, Vec<u8>)> {
        let mut files = vec![
            ("usr/bin/big".into(), bytes(1, block * 7 + 1234, true)),
            ("usr/bin/noise".into(), bytes(2, block * 2 + 99, false)),
            ("usr/bin/dup".into(), bytes(1, block * 7 + 1234, true)),
            ("exact".into(), bytes(3, block, true)),
            ("a-b".into(), bytes(4, block + 5, true)),
            ("a/b".into(), bytes(5, 700, true)),
            ("a/c".into(), bytes(6, block * 2, true)),
            ("a-c".into(), bytes(7, 900, true)),
            ("empty".into(), Vec::new()),
            ("etc/empty".into(), Vec::new()),
        ];
        let mut holey = bytes(8, block, true);
        holey.resize(holey.len() + block * 2, 0);
        holey.extend(bytes(9, block / 2, true));
        files.push(("var/holey".into(), holey));
        for i in 0..150u64 {
            let len = 200 + (i as usize * 977) % (block / 3);
            files.push((
                format!("usr/share/doc/f{i:03}").into(),
                bytes(100 + i, len, i % 7 != 0),
            ));
        }
        for (rel, data) in &files {
            let path = top.join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, data).unwrap();
        }
        std::os::unix::fs::symlink("usr/bin", top.join("bin")).unwrap();
        files
    }

    fn encode(tree: &Tree, opts: &SquashfsOptions, threads: usize) -> (Vec<u8>, Stats) {
        let mut out = std::io::Cursor::new(Vec::new());
        let (n, stats) = write_squashfs_threads(tree, opts, threads, &mut out).unwrap();
        let out = out.into_inner();
        assert_eq!(n, out.len() as u64);
        (out, stats)
    }

    #[test]
    fn output_does_not_depend_on_threads_and_every_block_is_compressed_ahead() {
        let dir = tempfile::tempdir().unwrap();
        let top = dir.path().join("root");
        sample_dir(&top, 4096);
        let mut tree = read_dir_tree(&top).unwrap();
        // Contents held in memory go through the same path as files on the host.
        tree.insert(
            &TreePath::new("etc/hostname").unwrap(),
            Entry::file(Content::bytes(b"edge\n".to_vec()), 0o644),
        )
        .unwrap();
        tree.insert(
            &TreePath::new("a/in-memory").unwrap(),
            Entry::file(Content::bytes(bytes(11, 3 * 4096 + 7, true)), 0o644),
        )
        .unwrap();
        for opts in [
            SquashfsOptions {
                compressor: SquashCompressor::Zstd { level: 3 },
                block_size: 4096,
                mtime: 7,
            },
            SquashfsOptions {
                compressor: SquashCompressor::Gzip,
                block_size: 8192,
                mtime: 7,
            },
        ] {
            // threads = 0: backhand alone, compressing each block itself on this thread.
            let (serial, none) = encode(&tree, &opts, 0);
            assert_eq!(none, Stats::default());
            for threads in [1, 2, 4] {
                let (out, stats) = encode(&tree, &opts, threads);
                assert!(
                    out == serial,
                    "{threads} threads give other bytes than backhand alone with {opts:?}"
                );
                // The walk foresaw every data and fragment block, in backhand's order.
                assert!(stats.ahead > 30, "{stats:?}");
                assert_eq!(stats.used, stats.ahead, "{opts:?}: {stats:?}");
                // What is left on the writer's thread: the options and metadata blocks.
                assert!(stats.inline <= 6, "{opts:?}: {stats:?}");
            }
        }
    }

    #[test]
    fn a_wrong_guess_costs_time_not_correctness() {
        // Blocks compressed ahead for other contents than the writer asks for are not used:
        // the writer's own bytes are compressed on its thread.
        let dir = tempfile::tempdir().unwrap();
        let top = dir.path().join("root");
        sample_dir(&top, 4096);
        let tree = read_dir_tree(&top).unwrap();
        let opts = SquashfsOptions {
            compressor: SquashCompressor::Zstd { level: 1 },
            block_size: 4096,
            mtime: 0,
        };
        let (expected, _) = encode(&tree, &opts, 0);
        let other = Content::bytes(bytes(99, 9 * 4096 + 5, true));
        let small = Content::bytes(bytes(98, 100, true));
        for files in [
            vec![("usr/bin/big", &other)],
            vec![("0", &small), ("usr/bin/big", &other)],
            Vec::new(),
        ] {
            let mut out = std::io::Cursor::new(Vec::new());
            let (_, stats) =
                crate::fs::squashfs::write_walking(&tree, &opts, 2, files, &mut out).unwrap();
            assert!(out.into_inner() == expected);
            assert_eq!(stats.used, 0, "{stats:?}");
            assert!(stats.inline > 40, "{stats:?}");
        }
    }

    #[test]
    fn unsquashfs_extracts_every_file() {
        require_tool("unsquashfs");
        let dir = tempfile::tempdir().unwrap();
        let top = dir.path().join("root");
        let files = sample_dir(&top, 4096);
        let tree = read_dir_tree(&top).unwrap();
        let opts = SquashfsOptions {
            compressor: SquashCompressor::Zstd { level: 5 },
            block_size: 4096,
            mtime: 0,
        };
        let img = dir.path().join("root.sqfs");
        std::fs::write(&img, encode(&tree, &opts, 2).0).unwrap();

        let listing = run_tool("unsquashfs", &["-lln", img.to_str().unwrap()]);
        for (rel, data) in &files {
            let line = listing
                .lines()
                .find(|l| l.ends_with(&format!("squashfs-root/{}", rel.display())))
                .unwrap_or_else(|| panic!("{} missing from:\n{listing}", rel.display()));
            let size: usize = line.split_whitespace().nth(2).unwrap().parse().unwrap();
            assert_eq!(size, data.len(), "{line}");
        }
        let out = dir.path().join("x");
        run_tool(
            "unsquashfs",
            &[
                "-no-xattrs",
                "-d",
                out.to_str().unwrap(),
                img.to_str().unwrap(),
            ],
        );
        for (rel, data) in &files {
            assert!(
                std::fs::read(out.join(rel)).unwrap() == *data,
                "{} differs after extraction",
                rel.display()
            );
        }
        assert_eq!(
            std::fs::read_link(out.join("bin")).unwrap(),
            Path::new("usr/bin")
        );
    }

    #[test]
    fn size_is_within_two_percent_of_mksquashfs() {
        require_tool("mksquashfs");
        let dir = tempfile::tempdir().unwrap();
        let top = dir.path().join("root");
        sample_dir(&top, 128 * 1024);
        let tree = read_dir_tree(&top).unwrap();
        let ours = encode(&tree, &SquashfsOptions::default(), 2).0.len() as f64;
        let theirs = dir.path().join("m.sqfs");
        run_tool(
            "mksquashfs",
            &[
                top.to_str().unwrap(),
                theirs.to_str().unwrap(),
                "-comp",
                "zstd",
                "-Xcompression-level",
                "15",
                "-b",
                "131072",
                "-noappend",
                "-quiet",
                "-no-progress",
            ],
        );
        let theirs = std::fs::metadata(&theirs).unwrap().len() as f64;
        eprintln!("edgeimg {ours} bytes, mksquashfs {theirs} bytes");
        assert!(
            ours <= theirs * 1.02,
            "edgeimg {ours} bytes, mksquashfs {theirs} bytes"
        );
    }
}
