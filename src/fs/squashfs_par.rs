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
