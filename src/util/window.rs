//! A window of a larger file, so an encoder can write a filesystem straight into its
//! partition of an image without knowing where the partition starts.

use std::io::{self, Read, Seek, SeekFrom, Write};

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
