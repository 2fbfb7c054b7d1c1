//! `.img.xz`: the image compressed with multi-threaded xz, streamed with bounded memory.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use anyhow::{Context, Result};
use liblzma::stream::{Check, MtStreamBuilder};
use liblzma::write::XzEncoder;

use super::atomic::AtomicFile;
use super::image::mapped_ranges;
use crate::progress::Reporter;

/// xz's default preset: a good ratio at moderate memory (about 100 MiB a thread).
const PRESET: u32 = 6;
/// Independent blocks let the threads work in parallel and let a reader seek. 3x the preset-6
/// dictionary (8 MiB) is xz's own default; a 1 GiB image gives ~40 blocks, plenty for 2 threads.
const BLOCK_SIZE: u64 = 24 << 20;
const CHUNK: usize = 1 << 20;

/// Compresses `input` into `output` (`.xz`, CRC64 check) with `threads` threads, reporting
/// progress in input bytes. The output appears only when complete.
pub fn compress_xz(input: &Path, output: &Path, threads: u32, rep: &dyn Reporter) -> Result<()> {
    let file = File::open(input).with_context(|| format!("opening {}", input.display()))?;
    let len = file
        .metadata()
        .with_context(|| format!("reading {}", input.display()))?
        .len();
    let mut reader =
        SparseReader::new(file, len).with_context(|| format!("mapping {}", input.display()))?;

    let stream = MtStreamBuilder::new()
        .threads(threads.max(1))
        .preset(PRESET)
        .check(Check::Crc64)
        .block_size(BLOCK_SIZE)
        .encoder()
        .context("starting the xz encoder")?;
    let out = AtomicFile::create(output)?;
    let mut encoder = XzEncoder::new_stream(out, stream);

    let name = input
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut task = rep.task(&format!("compressing {name}"), len);
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = reader
            .read(&mut buf)
            .with_context(|| format!("reading {}", input.display()))?;
        if n == 0 {
            break;
        }
        encoder
            .write_all(&buf[..n])
            .with_context(|| format!("compressing into {}", output.display()))?;
        task.advance(n as u64);
    }
    let out = encoder
        .finish()
        .with_context(|| format!("finishing {}", output.display()))?;
    out.commit()?;
    task.finish(&format!("{name} compressed"));
    Ok(())
}

/// Reads a file, producing the zeros of its holes without reading them from disk.
struct SparseReader {
    file: File,
    len: u64,
    pos: u64,
    /// Data ranges (start, end) not yet passed, in order.
    ranges: std::collections::VecDeque<(u64, u64)>,
}

impl SparseReader {
    fn new(file: File, len: u64) -> Result<Self> {
        let ranges = mapped_ranges(&file)?.into();
        Ok(SparseReader {
            file,
            len,
            pos: 0,
            ranges,
        })
    }
}

impl Read for SparseReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.ranges.front().is_some_and(|&(_, end)| end <= self.pos) {
            self.ranges.pop_front();
        }
        let left = self.len.saturating_sub(self.pos);
        if left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = (buf.len() as u64).min(left);
        let n = match self.ranges.front() {
            Some(&(start, end)) if start <= self.pos => {
                let n = want.min(end - self.pos) as usize;
                self.file.read_at(&mut buf[..n], self.pos)?
            }
            next => {
                let hole_end = next.map_or(self.len, |&(start, _)| start);
                let n = want.min(hole_end - self.pos) as usize;
                buf[..n].fill(0);
                n
            }
        };
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file shrank while being read",
            ));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::test_tools::{require_tool, run_tool};
    use crate::progress::{Silent, Task};
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
    fn sparse_reader_equals_a_plain_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.img");
        let want = sparse_file(&path);
        let mut got = Vec::new();
        let f = File::open(&path).unwrap();
        SparseReader::new(f, want.len() as u64)
            .unwrap()
            .read_to_end(&mut got)
            .unwrap();
        assert!(got == want);
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
        // 40 MiB in 24 MiB blocks: two blocks, so both threads had work.
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
