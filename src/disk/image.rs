//! The image file: created sparse under a temporary name in the output directory, filled by
//! writing each partition at its offset, then fsynced and renamed into place. A build that
//! fails (or panics) drops the writer and leaves nothing under the final name.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

pub struct ImageWriter {
    file: File,
    temp_path: PathBuf,
    size: u64,
    committed: bool,
    /// Removes the temporary if a signal ends the process first.
    _registered: crate::util::cleanup::Registered,
}

impl ImageWriter {
    /// Creates `<out_dir>/.<name>.tmp-<pid>-<n>` of `size` bytes, all holes. Keeping the temporary
    /// file in the output directory makes the final rename atomic (same filesystem).
    pub fn create(out_dir: &Path, name: &str, size: u64) -> Result<ImageWriter> {
        let temp_path = crate::util::atomic::temp_path_for(&out_dir.join(name))?;
        let _registered = crate::util::cleanup::register(&temp_path);
        let file = crate::util::atomic::create_file(&temp_path)
            .context("is the output directory writable?")?;
        let writer = ImageWriter {
            file,
            temp_path,
            size,
            committed: false,
            _registered,
        };
        writer
            .file
            .set_len(size)
            .with_context(|| format!("sizing {} to {size} bytes", writer.temp_path.display()))?;
        Ok(writer)
    }

    /// The temporary path the image is being written to.
    pub fn path(&self) -> &Path {
        &self.temp_path
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    /// The file, for encoders that write through `Write + Seek` (wrap it in an [`OffsetWriter`]).
    pub fn file_mut(&mut self) -> &mut File {
        &mut self.file
    }

    /// Writes `data` at byte `offset`; refuses to grow the image past its planned size.
    pub fn write_at(&self, offset: u64, data: &[u8]) -> Result<()> {
        let end = offset.saturating_add(data.len() as u64);
        if end > self.size {
            bail!(
                "writing {} bytes at offset {offset} would pass the end of the {}-byte image {}",
                data.len(),
                self.size,
                self.temp_path.display()
            );
        }
        self.file.write_all_at(data, offset).with_context(|| {
            format!(
                "writing {} bytes at offset {offset} of {}",
                data.len(),
                self.temp_path.display()
            )
        })
    }

    /// Makes the image durable and gives it its final name (in the same directory).
    pub fn commit(mut self, final_path: &Path) -> Result<()> {
        let len = self
            .file
            .metadata()
            .with_context(|| format!("reading {}", self.temp_path.display()))?
            .len();
        if len != self.size {
            bail!(
                "{} is {len} bytes, expected {}: something wrote past the planned size",
                self.temp_path.display(),
                self.size
            );
        }
        crate::util::atomic::publish(&self.file, &self.temp_path, final_path)?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for ImageWriter {
    fn drop(&mut self) {
        if !self.committed {
            // Best effort: the error that got us here matters more than a failed cleanup.
            let _ = std::fs::remove_file(&self.temp_path);
        }
    }
}

/// An image file opened for reading with its length and the ranges that hold data: what the
/// readers that skip holes (xz, bmap, the image digest) start from.
pub struct SparseFile {
    pub file: File,
    pub len: u64,
    /// Half-open `(start, end)` data ranges, in order (see [`mapped_ranges`]).
    pub data: Vec<(u64, u64)>,
}

impl SparseFile {
    pub fn open(path: &Path) -> Result<SparseFile> {
        let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let len = file
            .metadata()
            .with_context(|| format!("reading {}", path.display()))?
            .len();
        let data = mapped_ranges(&file).with_context(|| format!("mapping {}", path.display()))?;
        Ok(SparseFile { file, len, data })
    }
}

/// The byte ranges of `file` that hold data, as half-open `(start, end)` pairs in order, found
/// with `lseek(SEEK_DATA/SEEK_HOLE)`. Everything outside them reads as zeros. On a filesystem
/// without hole reporting the whole file is one range (correct, only slower to copy).
pub fn mapped_ranges(file: &File) -> Result<Vec<(u64, u64)>> {
    let len = file.metadata().context("reading the image's size")?.len();
    let fd = file.as_raw_fd();
    let mut ranges = Vec::new();
    let mut pos: u64 = 0;
    while pos < len {
        let data = match lseek(fd, pos, libc::SEEK_DATA) {
            Ok(d) => d,
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => break,
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) && ranges.is_empty() => {
                return Ok(vec![(0, len)])
            }
            Err(e) => return Err(e).context("finding data in the image (lseek SEEK_DATA)"),
        };
        let hole = lseek(fd, data, libc::SEEK_HOLE)
            .context("finding holes in the image (lseek SEEK_HOLE)")?;
        let hole = hole.min(len);
        if hole > data {
            ranges.push((data, hole));
        }
        pos = hole.max(data + 1);
    }
    Ok(ranges)
}

fn lseek(fd: i32, pos: u64, whence: i32) -> io::Result<u64> {
    let off =
        libc::off_t::try_from(pos).map_err(|_| io::Error::from_raw_os_error(libc::EOVERFLOW))?;
    // SAFETY: lseek on a file descriptor we borrow for the duration of the call; it moves the
    // shared file offset, which callers of mapped_ranges do not rely on.
    let r = unsafe { libc::lseek(fd, off, whence) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::window::OffsetWriter;
    use std::io::{Seek, SeekFrom, Write};

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn dropped_writer_leaves_nothing_and_commit_renames() {
        let dir = tempfile::tempdir().unwrap();
        {
            let w = ImageWriter::create(dir.path(), "a.img", 4 * MIB).unwrap();
            w.write_at(MIB, b"hello").unwrap();
            assert!(w.path().exists());
        }
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "temp file left behind"
        );

        let w = ImageWriter::create(dir.path(), "a.img", 4 * MIB).unwrap();
        assert!(w
            .path()
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with(".a.img.tmp-"));
        w.write_at(MIB, b"hello").unwrap();
        assert!(
            w.write_at(4 * MIB - 2, b"abc").is_err(),
            "writing past the end must fail"
        );
        let final_path = dir.path().join("a.img");
        w.commit(&final_path).unwrap();
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("a.img")]);
        let bytes = std::fs::read(&final_path).unwrap();
        assert_eq!(bytes.len() as u64, 4 * MIB);
        assert_eq!(&bytes[MIB as usize..MIB as usize + 5], b"hello");
    }

    #[test]
    fn offset_writer_maps_positions_and_stops_at_the_limit() {
        let mut buf = io::Cursor::new(vec![0u8; 100]);
        {
            let mut w = OffsetWriter::bounded(&mut buf, 10, 20).unwrap();
            w.write_all(b"abc").unwrap();
            assert_eq!(w.seek(SeekFrom::Start(10)).unwrap(), 10);
            w.write_all(b"xy").unwrap();
            assert_eq!(w.stream_position().unwrap(), 12);
            assert_eq!(w.seek(SeekFrom::End(-1)).unwrap(), 19);
            w.write_all(b"z").unwrap();
            let err = w.write_all(b"!").unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::StorageFull);
            assert!(w.seek(SeekFrom::Current(-100)).is_err());
        }
        let v = buf.into_inner();
        assert_eq!(&v[10..13], b"abc");
        assert_eq!(&v[20..22], b"xy");
        assert_eq!(v[29], b'z');
        assert_eq!(v[30], 0);

        let mut buf = io::Cursor::new(vec![0u8; 8]);
        let mut w = OffsetWriter::new(&mut buf, 4).unwrap();
        w.write_all(b"abcd").unwrap();
        w.seek(SeekFrom::Start(1)).unwrap();
        w.write_all(b"X").unwrap();
        assert_eq!(&buf.into_inner()[..], b"\0\0\0\0aXcd");
    }

    #[test]
    fn mapped_ranges_finds_written_regions() {
        let dir = tempfile::tempdir().unwrap();
        let w = ImageWriter::create(dir.path(), "s.img", 16 * MIB).unwrap();
        w.write_at(MIB, &[1u8; 4096]).unwrap();
        w.write_at(8 * MIB, &[2u8; 8192]).unwrap();
        let ranges = mapped_ranges(w.file()).unwrap();
        // Filesystems report data at their own block granularity: check containment.
        assert_eq!(ranges.len(), 2, "{ranges:?}");
        assert!(
            ranges[0].0 <= MIB && ranges[0].1 >= MIB + 4096 && ranges[0].1 < 8 * MIB,
            "{ranges:?}"
        );
        assert!(
            ranges[1].0 <= 8 * MIB && ranges[1].1 >= 8 * MIB + 8192,
            "{ranges:?}"
        );
        let total: u64 = ranges.iter().map(|(a, b)| b - a).sum();
        assert!(total < 2 * MIB, "the image should stay sparse: {ranges:?}");
    }
}
