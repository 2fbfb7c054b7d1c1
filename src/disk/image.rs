//! The image file: created sparse under a temporary name in the output directory, filled by
//! writing each partition at its offset, then fsynced and renamed into place. A build that
//! fails (or panics) drops the writer and leaves nothing under the final name.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

pub struct ImageWriter {
    file: File,
    temp_path: PathBuf,
    size: u64,
    committed: bool,
}

impl ImageWriter {
    /// Creates `<out_dir>/.<name>.tmp-<pid>` of `size` bytes, all holes. Keeping the temporary
    /// file in the output directory makes the final rename atomic (same filesystem).
    pub fn create(out_dir: &Path, name: &str, size: u64) -> Result<ImageWriter> {
        let temp_path = out_dir.join(format!(".{name}.tmp-{}", std::process::id()));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temp_path)
            .with_context(|| {
                format!(
                    "creating {} (is the output directory writable?)",
                    temp_path.display()
                )
            })?;
        let writer = ImageWriter {
            file,
            temp_path,
            size,
            committed: false,
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
        self.file
            .sync_all()
            .with_context(|| format!("syncing {}", self.temp_path.display()))?;
        std::fs::rename(&self.temp_path, final_path).with_context(|| {
            format!(
                "renaming {} to {}",
                self.temp_path.display(),
                final_path.display()
            )
        })?;
        self.committed = true;
        sync_parent(final_path);
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

/// Fsyncs the directory holding `path` so the rename survives a power cut. Best effort: some
/// filesystems refuse fsync on directories and the data itself is already synced.
pub(crate) fn sync_parent(path: &Path) {
    if let Some(dir) = path.parent() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
}

/// A window of a larger file: position 0 is `offset` in the inner writer. Lets an encoder
/// write a filesystem straight into its partition. A bounded window (`bounded`) also refuses
/// to write at or past `limit` bytes, turning an overflow into an error instead of a
/// corrupted next partition.
pub struct OffsetWriter<W> {
    inner: W,
    offset: u64,
    limit: u64,
    pos: u64,
}

impl<W: Seek> OffsetWriter<W> {
    /// Positions `inner` at `offset`; the window has no end of its own.
    pub fn new(inner: W, offset: u64) -> io::Result<Self> {
        Self::bounded(inner, offset, u64::MAX - offset)
    }

    /// Positions `inner` at `offset`; the window is `limit` bytes long (the partition size).
    pub fn bounded(mut inner: W, offset: u64, limit: u64) -> io::Result<Self> {
        inner.seek(SeekFrom::Start(offset))?;
        Ok(OffsetWriter {
            inner,
            offset,
            limit,
            pos: 0,
        })
    }

    pub fn into_inner(self) -> W {
        self.inner
    }

    /// The window's length (`u64::MAX - offset` when unbounded).
    pub fn limit(&self) -> u64 {
        self.limit
    }
}

impl<W: Write> Write for OffsetWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let room = self.limit.saturating_sub(self.pos);
        if room == 0 {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                format!("the partition is full: it holds {} bytes", self.limit),
            ));
        }
        let n = (buf.len() as u64).min(room) as usize;
        let written = self.inner.write(&buf[..n])?;
        self.pos += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<W: Read> Read for OffsetWriter<W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let room = self.limit.saturating_sub(self.pos);
        let n = (buf.len() as u64).min(room) as usize;
        let got = self.inner.read(&mut buf[..n])?;
        self.pos += got as u64;
        Ok(got)
    }
}

impl<W: Seek> Seek for OffsetWriter<W> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        // The window behaves like a device of `limit` bytes: `End` counts from the limit.
        let target = match pos {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
            SeekFrom::End(d) => self.limit.checked_add_signed(d),
        };
        let target = target.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before the partition start",
            )
        })?;
        self.inner.seek(SeekFrom::Start(self.offset + target))?;
        self.pos = target;
        Ok(target)
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
