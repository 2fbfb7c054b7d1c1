//! `.img.xz`: the image compressed into one standard `.xz` stream of independent blocks.
//!
//! An image is mostly holes (the root partition's free space, the data placeholder), and
//! LZMA2 spends as long on a run of zeros as on data. So the stream is put together here
//! block by block: blocks that are all hole reuse one encoded zero block, computed once; the
//! others are compressed in parallel, a window of `threads` blocks at a time (bounded memory).
//! The result is an ordinary single-stream `.xz` file (`xz -t`, `xz -lvv`, bmaptool and
//! Raspberry Pi Imager read it like any other).

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;

use anyhow::{bail, Context, Result};
use liblzma::stream::{Action, Filters, LzmaOptions, Status, Stream};

use crate::progress::Reporter;
use crate::util::atomic::AtomicFile;

/// xz's default preset (its match finder and nice length), with the dictionary cut to the
/// block size: a dictionary larger than a block holds nothing more, and at 2 MiB each encoder
/// needs about 25 MiB instead of preset 6's 94 MiB, which keeps `build`'s memory small on
/// machines with many cores.
const PRESET: u32 = 6;
/// Blocks of 2 MiB: a quarter of the preset-6 dictionary (under 1% of ratio on an image),
/// for holes, stored regions and cached blocks at a fine grain, and enough blocks to keep
/// every core busy.
const BLOCK_SIZE: u64 = 2 << 20;
/// A block zstd (level 1) cannot shrink below this fraction is already compressed (kernel,
/// initramfs, squashfs): it is stored, not squeezed a second time.
const STORE_RATIO: f64 = 0.9;
/// Check type 0x04: CRC64, xz's default.
const CHECK_ID: u8 = 0x04;
const CHECK_SIZE: u64 = 8;
const MAGIC: [u8; 6] = [0xFD, b'7', b'z', b'X', b'Z', 0x00];

/// One encoded block and what the index records of it.
#[derive(Clone)]
struct Block {
    bytes: Vec<u8>,
    unpadded: u64,
    uncompressed: u64,
}

/// Compresses `input` into `output` (`.xz`, CRC64 check) with `threads` threads, reporting
/// progress in input bytes. The output appears only when complete.
pub fn compress_xz(input: &Path, output: &Path, threads: u32, rep: &dyn Reporter) -> Result<()> {
    compress_xz_cached(input, output, threads, None, rep)
}

/// [`compress_xz`], reusing encoded blocks from `block_cache` (a directory, see
/// [`super::xz_blocks::BlockCache`]): a block whose bytes were encoded before is read back
/// (and checked) instead of compressed again, so an unchanged region of an image (the root
/// squashfs, the kernel) costs a sha256, not an LZMA pass. The output is the same bytes
/// with or without the cache.
pub fn compress_xz_cached(
    input: &Path,
    output: &Path,
    threads: u32,
    block_cache: Option<&Path>,
    rep: &dyn Reporter,
) -> Result<()> {
    let super::image::SparseFile { file, len, data } = super::image::SparseFile::open(input)?;
    let name = input
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut task = rep.task(&format!("compressing {name}"), len);
    let cache = block_cache.map(super::xz_blocks::BlockCache::new);

    let mut out = AtomicFile::create(output)?;
    let mut index: Vec<(u64, u64)> = Vec::new();
    let mut zero_blocks: HashMap<u64, Block> = HashMap::new();
    let spans: Vec<(u64, u64)> = (0..len)
        .step_by(BLOCK_SIZE as usize)
        .map(|start| (start, (len - start).min(BLOCK_SIZE)))
        .collect();
    let write_err = || format!("writing {}", output.display());
    out.write_all(&stream_header()).with_context(write_err)?;
    // Holes cost nothing; windows are cut so that each holds `2 * threads` data blocks,
    // keeping every core busy with bounded memory.
    let per_window = 2 * threads.max(1) as usize;
    let mut start = 0;
    while start < spans.len() {
        let mut end = start;
        let mut data_blocks = 0;
        while end < spans.len() && data_blocks < per_window {
            let (s, l) = spans[end];
            if !is_hole(&data, s, l) {
                data_blocks += 1;
            }
            end += 1;
        }
        let blocks = encode_window(
            &file,
            &spans[start..end],
            &data,
            &mut zero_blocks,
            cache.as_ref(),
            threads,
        )
        .with_context(|| format!("compressing {}", input.display()))?;
        for b in blocks {
            out.write_all(&b.bytes).with_context(write_err)?;
            index.push((b.unpadded, b.uncompressed));
            task.advance(b.uncompressed);
        }
        start = end;
    }
    let index_bytes = index_field(&index);
    out.write_all(&index_bytes).with_context(write_err)?;
    out.write_all(&stream_footer(index_bytes.len() as u64))
        .with_context(write_err)?;
    out.commit()?;
    task.finish(&format!("{name} compressed"));
    Ok(())
}

/// Encodes the blocks of a window, the data blocks on `threads` workers; all-hole blocks come
/// from the zero-block memo, known blocks from the block cache.
fn encode_window(
    file: &File,
    window: &[(u64, u64)],
    data: &[(u64, u64)],
    zero_blocks: &mut HashMap<u64, Block>,
    cache: Option<&super::xz_blocks::BlockCache>,
    threads: u32,
) -> Result<Vec<Block>> {
    for &(start, len) in window {
        if is_hole(data, start, len) && !zero_blocks.contains_key(&len) {
            zero_blocks.insert(len, encode_block(&vec![0u8; len as usize])?);
        }
    }
    let zero_blocks = &*zero_blocks;
    let todo: Vec<(u64, u64)> = window
        .iter()
        .copied()
        .filter(|&(s, l)| !is_hole(data, s, l))
        .collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut encoded: Vec<Option<Block>> = vec![None; todo.len()];
    let results: Vec<Result<Vec<(usize, Block)>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads.max(1).min(todo.len().max(1) as u32))
            .map(|_| {
                scope.spawn(|| -> Result<Vec<(usize, Block)>> {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(&(start, len)) = todo.get(i) else {
                            return Ok(done);
                        };
                        let mut buf = vec![0u8; len as usize];
                        file.read_exact_at(&mut buf, start)?;
                        done.push((i, encode_block_cached(&buf, cache)?));
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| bail!("an xz worker thread panicked"))
            })
            .collect()
    });
    for r in results {
        for (i, b) in r? {
            encoded[i] = Some(b);
        }
    }
    let mut encoded = encoded.into_iter();
    window
        .iter()
        .map(|&(start, len)| {
            if is_hole(data, start, len) {
                Ok(zero_blocks[&len].clone())
            } else {
                encoded
                    .next()
                    .flatten()
                    .context("an xz worker left a block unencoded")
            }
        })
        .collect()
}

/// One block, from the cache when these exact bytes were encoded before (the cached copy is
/// checked); otherwise encoded and stored for next time.
fn encode_block_cached(
    input: &[u8],
    cache: Option<&super::xz_blocks::BlockCache>,
) -> Result<Block> {
    let Some(cache) = cache else {
        return encode_block(input);
    };
    let key = cache.key(PRESET, input);
    if let Some(c) = cache.get(&key) {
        return Ok(Block {
            bytes: c.bytes,
            unpadded: c.unpadded,
            uncompressed: c.uncompressed,
        });
    }
    let b = encode_block(input)?;
    cache.put(&key, &b.bytes, b.unpadded, b.uncompressed);
    Ok(b)
}

/// Whether no data range of the file touches [start, start+len).
fn is_hole(data: &[(u64, u64)], start: u64, len: u64) -> bool {
    !data.iter().any(|&(s, e)| s < start + len && e > start)
}

/// One xz block: header, LZMA2 data (compressed, or stored for data that is already
/// compressed), padding, CRC64 of the uncompressed bytes.
fn encode_block(input: &[u8]) -> Result<Block> {
    let compressed = if already_compressed(input) {
        lzma2_stored(input)
    } else {
        lzma2_compressed(input)?
    };
    let header = block_header(DICT_SIZE);
    let mut bytes = header.clone();
    bytes.extend_from_slice(&compressed);
    bytes.resize(bytes.len().next_multiple_of(4), 0);
    bytes.extend_from_slice(&crc64(input).to_le_bytes());
    Ok(Block {
        bytes,
        unpadded: header.len() as u64 + compressed.len() as u64 + CHECK_SIZE,
        uncompressed: input.len() as u64,
    })
}

fn already_compressed(input: &[u8]) -> bool {
    match zstd::bulk::compress(input, 1) {
        Ok(z) => z.len() as f64 >= input.len() as f64 * STORE_RATIO,
        Err(_) => false,
    }
}

/// LZMA2 uncompressed chunks: control byte (0x01 resets the dictionary, 0x02 does not), the
/// chunk size minus one (big-endian), the bytes; then the end marker.
fn lzma2_stored(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len() + input.len() / 65536 * 3 + 4);
    for (i, chunk) in input.chunks(1 << 16).enumerate() {
        out.push(if i == 0 { 0x01 } else { 0x02 });
        out.extend_from_slice(&((chunk.len() - 1) as u16).to_be_bytes());
        out.extend_from_slice(chunk);
    }
    out.push(0x00);
    out
}

/// Raw LZMA2 at preset 6.
fn lzma2_compressed(input: &[u8]) -> Result<Vec<u8>> {
    let mut opts = LzmaOptions::new_preset(PRESET).context("xz preset")?;
    opts.dict_size(DICT_SIZE);
    let mut filters = Filters::new();
    filters.lzma2(&opts);
    let mut stream = Stream::new_raw_encoder(&filters).context("starting the LZMA2 encoder")?;
    let mut compressed = Vec::with_capacity(input.len() / 4 + 4096);
    let mut consumed = 0usize;
    loop {
        if compressed.capacity() - compressed.len() < 4096 {
            compressed.reserve(1 << 20);
        }
        let before = stream.total_in();
        let status = stream
            .process_vec(&input[consumed..], &mut compressed, Action::Finish)
            .context("LZMA2 encoding")?;
        consumed += (stream.total_in() - before) as usize;
        if status == Status::StreamEnd {
            return Ok(compressed);
        }
    }
}

/// The dictionary, as the block header's LZMA2 property byte must describe it.
const DICT_SIZE: u32 = BLOCK_SIZE as u32;

/// Block header with one filter (LZMA2) and no optional size fields.
fn block_header(dict_size: u32) -> Vec<u8> {
    let filter = [0x21, 0x01, lzma2_dict_property(dict_size)];
    // size byte + flags byte + filter flags, padded to a multiple of four, then CRC32.
    let unpadded = 2 + filter.len();
    let size = (unpadded + 4).next_multiple_of(4);
    let mut h = vec![((size / 4) - 1) as u8, 0x00];
    h.extend_from_slice(&filter);
    h.resize(size - 4, 0);
    let crc = crc32fast::hash(&h);
    h.extend_from_slice(&crc.to_le_bytes());
    h
}

/// The smallest LZMA2 dictionary-size property whose size is at least `dict`.
fn lzma2_dict_property(dict: u32) -> u8 {
    (0u8..40)
        .find(|&p| (2u64 | (p as u64 & 1)) << (p / 2 + 11) >= dict as u64)
        .unwrap_or(40)
}

fn stream_flags() -> [u8; 2] {
    [0x00, CHECK_ID]
}

fn stream_header() -> Vec<u8> {
    let mut h = MAGIC.to_vec();
    h.extend_from_slice(&stream_flags());
    h.extend_from_slice(&crc32fast::hash(&stream_flags()).to_le_bytes());
    h
}

/// The index: a record (unpadded size, uncompressed size) per block, padded, with CRC32.
fn index_field(records: &[(u64, u64)]) -> Vec<u8> {
    let mut i = vec![0x00];
    varint(&mut i, records.len() as u64);
    for &(unpadded, uncompressed) in records {
        varint(&mut i, unpadded);
        varint(&mut i, uncompressed);
    }
    i.resize(i.len().next_multiple_of(4), 0);
    let crc = crc32fast::hash(&i);
    i.extend_from_slice(&crc.to_le_bytes());
    i
}

fn stream_footer(index_size: u64) -> Vec<u8> {
    let mut body = (((index_size / 4) - 1) as u32).to_le_bytes().to_vec();
    body.extend_from_slice(&stream_flags());
    let mut f = crc32fast::hash(&body).to_le_bytes().to_vec();
    f.extend_from_slice(&body);
    f.extend_from_slice(b"YZ");
    f
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7F) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// CRC-64/XZ, the check xz writes by default, computed by liblzma itself.
fn crc64(data: &[u8]) -> u64 {
    // SAFETY: lzma_crc64 reads exactly `data.len()` bytes from a valid slice.
    unsafe { liblzma_sys::lzma_crc64(data.as_ptr(), data.len(), 0) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::{Silent, Task};
    use crate::util::test_tools::{require_tool, run_tool};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    struct Counting(Arc<AtomicU64>);
    struct CountingTask(Arc<AtomicU64>);
    impl Task for CountingTask {
        fn advance(&mut self, units: u64) {
            self.0.fetch_add(units, Ordering::Relaxed);
        }
        fn finish(&mut self, _: &str) {}
    }
    impl Reporter for Counting {
        fn step(&self, _: &str) {}
        fn task(&self, _: &str, _: u64) -> Box<dyn Task> {
            Box::new(CountingTask(self.0.clone()))
        }
        fn warn(&self, _: &str) {}
    }

    fn sparse_file(path: &Path) -> Vec<u8> {
        let f = File::create(path).unwrap();
        f.set_len(40 << 20).unwrap();
        let noise: Vec<u8> = (0..300_000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        f.write_all_at(&noise, 3 << 20).unwrap();
        f.write_all_at(b"tail", (40 << 20) - 4).unwrap();
        drop(f);
        std::fs::read(path).unwrap()
    }

    #[test]
    fn xz_tool_accepts_and_restores_the_input() {
        require_tool("xz");
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("s.img");
        let want = sparse_file(&input);
        let output = dir.path().join("s.img.xz");
        let count = Arc::new(AtomicU64::new(0));
        compress_xz(&input, &output, 2, &Counting(count.clone())).unwrap();
        assert_eq!(
            count.load(Ordering::Relaxed),
            want.len() as u64,
            "progress counts input bytes"
        );
        run_tool("xz", &["-t", output.to_str().unwrap()]);
        let out = std::process::Command::new("xz")
            .args(["-dc", output.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(out.status.success());
        assert!(
            out.stdout == want,
            "decompressed bytes differ from the input"
        );
        let info = run_tool("xz", &["--robot", "-lvv", output.to_str().unwrap()]);
        assert!(info.contains("CRC64"), "{info}");
        // 40 MiB in 2 MiB blocks: several blocks, so both threads had work.
        assert!(
            info.lines().filter(|l| l.starts_with("block\t")).count() >= 2,
            "{info}"
        );
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "no temporary left: {names:?}");
    }

    #[test]
    fn already_compressed_blocks_are_stored_and_restore() {
        require_tool("xz");
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("mixed.img");
        // Noise (incompressible, stored) next to text (compressed).
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut data: Vec<u8> = (0..BLOCK_SIZE)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            })
            .collect();
        data.extend(
            b"edgeimg builds images. "
                .iter()
                .cycle()
                .take(BLOCK_SIZE as usize),
        );
        std::fs::write(&input, &data).unwrap();
        assert!(already_compressed(&data[..BLOCK_SIZE as usize]));
        assert!(!already_compressed(&data[BLOCK_SIZE as usize..]));
        let output = dir.path().join("mixed.img.xz");
        compress_xz(&input, &output, 2, &Silent).unwrap();
        run_tool("xz", &["-t", output.to_str().unwrap()]);
        let out = std::process::Command::new("xz")
            .args(["-dc", output.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            out.stdout == data,
            "decompressed bytes differ from the input"
        );
        let size = std::fs::metadata(&output).unwrap().len();
        assert!(
            size < BLOCK_SIZE + BLOCK_SIZE / 100,
            "text part not compressed: {size} bytes"
        );
    }

    #[test]
    fn crc64_is_the_xz_check() {
        assert_eq!(crc64(b"123456789"), 0x995D_C9BB_DF19_39FA);
        assert_eq!(lzma2_dict_property(8 << 20), 22);
    }

    #[test]
    fn a_file_of_holes_reuses_one_zero_block_and_restores() {
        require_tool("xz");
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("holes.img");
        File::create(&input)
            .unwrap()
            .set_len(3 * BLOCK_SIZE + 4096)
            .unwrap();
        let output = dir.path().join("holes.img.xz");
        compress_xz(&input, &output, 2, &Silent).unwrap();
        run_tool("xz", &["-t", output.to_str().unwrap()]);
        let out = std::process::Command::new("xz")
            .args(["-dc", output.to_str().unwrap()])
            .output()
            .unwrap();
        assert_eq!(out.stdout.len() as u64, 3 * BLOCK_SIZE + 4096);
        assert!(out.stdout.iter().all(|&b| b == 0));
        let info = run_tool("xz", &["--robot", "-lvv", output.to_str().unwrap()]);
        assert_eq!(
            info.lines().filter(|l| l.starts_with("block\t")).count(),
            4,
            "{info}"
        );
    }

    #[test]
    fn missing_input_is_named_and_leaves_no_output() {
        let dir = tempfile::tempdir().unwrap();
        let err = compress_xz(
            &dir.path().join("none.img"),
            &dir.path().join("none.img.xz"),
            2,
            &Silent,
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("none.img"));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
