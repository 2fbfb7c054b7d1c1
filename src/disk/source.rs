//! An image as a stream: a raw `.img` or an `.img.xz` read as one stream, the `.bmap` beside it
//! (parsed and its own checksum checked), and [`write_image`], which streams it onto a card
//! or a file (`flash`, and `inspect` unpacking an `.img.xz`).

use std::fs::File;
use std::io::{BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::progress::Reporter;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

/// An image opened for streaming.
pub struct ImageSource {
    pub path: PathBuf,
    pub compressed: bool,
    /// Bytes of the uncompressed image, when known before reading (raw images; from the bmap).
    pub size: Option<u64>,
    reader: Box<dyn Read + Send>,
}

impl ImageSource {
    pub fn open(path: &Path) -> Result<ImageSource> {
        let file = File::open(path).with_context(|| format!("opening image {}", path.display()))?;
        let compressed = is_xz(path, &file)?;
        let (size, reader): (Option<u64>, Box<dyn Read + Send>) = if compressed {
            (
                None,
                Box::new(liblzma::read::XzDecoder::new_multi_decoder(
                    BufReader::with_capacity(1 << 20, file),
                )),
            )
        } else {
            let len = file
                .metadata()
                .with_context(|| format!("reading {}", path.display()))?
                .len();
            (Some(len), Box::new(file))
        };
        Ok(ImageSource {
            path: path.to_path_buf(),
            compressed,
            size,
            reader,
        })
    }

    /// Reads until `buf` is full or the image ends; returns the bytes read.
    pub fn read_full(&mut self, buf: &mut [u8]) -> Result<usize> {
        let mut n = 0;
        while n < buf.len() {
            let r = self.reader.read(&mut buf[n..]).with_context(|| {
                format!(
                    "reading {}{}",
                    self.path.display(),
                    if self.compressed {
                        " (xz stream damaged or truncated?)"
                    } else {
                        ""
                    }
                )
            })?;
            if r == 0 {
                break;
            }
            n += r;
        }
        Ok(n)
    }
}

fn is_xz(path: &Path, file: &File) -> Result<bool> {
    use std::os::unix::fs::FileExt;
    let mut magic = [0u8; 6];
    let n = file
        .read_at(&mut magic, 0)
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(n == 6 && magic == [0xfd, b'7', b'z', b'X', b'Z', 0])
}

/// The `.bmap` edgeimg writes beside an image: `<stem>.bmap` for `<stem>.img` and
/// `<stem>.img.xz`.
pub fn bmap_beside(image: &Path) -> Option<PathBuf> {
    let name = image.file_name()?.to_str()?;
    let stem = name
        .strip_suffix(".img.xz")
        .or_else(|| name.strip_suffix(".img"))
        .or_else(|| name.strip_suffix(".xz"))
        .unwrap_or(name);
    let p = image.with_file_name(format!("{stem}.bmap"));
    p.is_file().then_some(p)
}

/// A parsed block map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bmap {
    pub image_size: u64,
    pub block_size: u64,
    /// Inclusive block ranges with the sha256 of their bytes.
    pub ranges: Vec<(u64, u64, String)>,
}

impl Bmap {
    pub fn mapped_bytes(&self) -> u64 {
        self.ranges
            .iter()
            .map(|(a, b, _)| ((b + 1) * self.block_size).min(self.image_size) - a * self.block_size)
            .sum()
    }
}

fn tag<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let start = text.find(&open)? + open.len();
    let end = text[start..].find(&format!("</{name}>"))? + start;
    Some(text[start..end].trim())
}

/// Parses a bmap (format 1.x/2.x, sha256) and checks its own checksum.
pub fn parse_bmap(text: &str, what: &str) -> Result<Bmap> {
    let num = |name: &str| -> Result<u64> {
        tag(text, name)
            .with_context(|| format!("{what}: no <{name}>"))?
            .parse()
            .with_context(|| format!("{what}: <{name}> is not a number"))
    };
    let image_size = num("ImageSize")?;
    let block_size = num("BlockSize")?;
    if block_size == 0 || block_size % 512 != 0 {
        bail!("{what}: block size {block_size} is not a multiple of 512");
    }
    let ctype = tag(text, "ChecksumType").unwrap_or("sha256");
    if ctype != "sha256" {
        bail!("{what}: checksum type {ctype} is not supported (only sha256)");
    }
    if let Some(own) = tag(text, "BmapFileChecksum") {
        let zeroed = text.replacen(own, &"0".repeat(own.len()), 1);
        let got = hex::encode(Sha256::digest(zeroed.as_bytes()));
        if got != own {
            bail!("{what}: the bmap file's own checksum does not match (the file is damaged or was edited): expected {own}, got {got}");
        }
    }
    let map = tag(text, "BlockMap").with_context(|| format!("{what}: no <BlockMap>"))?;
    let blocks = image_size.div_ceil(block_size);
    let mut ranges = Vec::new();
    let mut rest = map;
    while let Some(i) = rest.find("<Range") {
        rest = &rest[i..];
        let head_end = rest
            .find('>')
            .with_context(|| format!("{what}: unterminated <Range"))?;
        let head = &rest[..head_end];
        let chksum = head
            .split("chksum=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .with_context(|| format!("{what}: a <Range> has no chksum"))?
            .to_string();
        let body_end = rest
            .find("</Range>")
            .with_context(|| format!("{what}: unterminated <Range>"))?;
        let body = rest[head_end + 1..body_end].trim();
        let (a, b) = match body.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (body, body),
        };
        let a: u64 = a
            .parse()
            .with_context(|| format!("{what}: bad range {body:?}"))?;
        let b: u64 = b
            .parse()
            .with_context(|| format!("{what}: bad range {body:?}"))?;
        if a > b || b >= blocks || ranges.last().is_some_and(|(_, lb, _)| *lb >= a) {
            bail!("{what}: range {body:?} is out of order or beyond the image's {blocks} blocks");
        }
        ranges.push((a, b, chksum));
        rest = &rest[body_end..];
    }
    Ok(Bmap {
        image_size,
        block_size,
        ranges,
    })
}

pub fn read_bmap(path: &Path) -> Result<Bmap> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading bmap {}", path.display()))?;
    parse_bmap(&text, &path.display().to_string())
}

/// Bytes read and written at a time.
pub const CHUNK: usize = 1 << 20;

/// What writing produced.
#[derive(Debug, Clone, Copy)]
pub struct WriteStats {
    pub image_size: u64,
    pub bytes_written: u64,
}

/// Streams `src` onto `target`. A plain-file target (`sparse`) is truncated first and its
/// all-zero chunks are left as holes. With a bmap, only its ranges are written and each
/// range's sha256 is checked against the bmap as it is written.
pub fn write_image(
    src: &mut ImageSource,
    bmap: Option<&Bmap>,
    target: &File,
    what: &str,
    sparse: bool,
    rep: &dyn Reporter,
) -> Result<(WriteStats, [u8; 32])> {
    let total = bmap.map(Bmap::mapped_bytes).or(src.size).unwrap_or(0);
    let mut task = rep.task(&format!("writing {what}"), total);
    let mut buf = vec![0u8; CHUNK];
    let mut pos: u64 = 0;
    let mut written: u64 = 0;
    let mut whole = Sha256::new();
    let write = |data: &[u8], at: u64| -> Result<()> {
        target
            .write_all_at(data, at)
            .with_context(|| format!("writing {what} at byte {at}"))
    };
    match bmap {
        None => loop {
            let n = src.read_full(&mut buf)?;
            if n == 0 {
                break;
            }
            let data = &buf[..n];
            whole.update(data);
            if !(sparse && data.iter().all(|&b| b == 0)) {
                write(data, pos)?;
                written += n as u64;
            }
            pos += n as u64;
            task.advance(n as u64);
        },
        Some(map) => {
            for (a, b, sum) in &map.ranges {
                let start = a * map.block_size;
                let end = ((b + 1) * map.block_size).min(map.image_size);
                // Skip to the range (read and drop: an xz stream cannot seek).
                while pos < start {
                    let want = ((start - pos) as usize).min(CHUNK);
                    let n = src.read_full(&mut buf[..want])?;
                    if n == 0 {
                        bail!("{} ends at byte {pos}, before the bmap's range {a}-{b}: the image and its bmap do not belong together", src.path.display());
                    }
                    pos += n as u64;
                }
                let mut h = Sha256::new();
                while pos < end {
                    let want = ((end - pos) as usize).min(CHUNK);
                    let n = src.read_full(&mut buf[..want])?;
                    if n == 0 {
                        bail!("{} ends at byte {pos}, inside the bmap's range {a}-{b}: the image is truncated or the bmap belongs to another image", src.path.display());
                    }
                    h.update(&buf[..n]);
                    write(&buf[..n], pos)?;
                    pos += n as u64;
                    written += n as u64;
                    task.advance(n as u64);
                }
                let got = hex::encode(h.finalize());
                if &got != sum {
                    bail!(
                        "{}: blocks {a}-{b} do not match the bmap's checksum (expected {sum}, got {got}): \
                         the image is damaged or the bmap belongs to another image; {what} is only partly written",
                        src.path.display()
                    );
                }
            }
            pos = map.image_size;
        }
    }
    if sparse {
        target
            .set_len(pos)
            .with_context(|| format!("setting the size of {what}"))?;
    }
    target
        .sync_all()
        .with_context(|| format!("flushing {what} (fsync)"))?;
    task.finish(&format!("wrote {} MiB of {} MiB", written >> 20, pos >> 20));
    Ok((
        WriteStats {
            image_size: pos,
            bytes_written: written,
        },
        whole.finalize().into(),
    ))
}

/// Drops the target's cached pages so that the read-back comes from the medium.
pub fn drop_cache(f: &File) {
    use std::os::fd::AsRawFd;
    // SAFETY: advisory call on a descriptor we own for the duration of the call.
    unsafe {
        libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_edgeimg_bmaps_and_rejects_edits() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("a.img");
        let f = File::create(&img).unwrap();
        f.set_len(1 << 20).unwrap();
        use std::os::unix::fs::FileExt;
        f.write_all_at(&[7u8; 5000], 8192).unwrap();
        f.sync_all().unwrap();
        let bmap = dir.path().join("a.bmap");
        crate::disk::bmap::write_bmap(&img, &bmap).unwrap();
        let b = read_bmap(&bmap).unwrap();
        assert_eq!(b.image_size, 1 << 20);
        assert_eq!(b.block_size, 4096);
        assert!(b.ranges.iter().any(|(a, z, _)| *a <= 2 && *z >= 3), "{b:?}");
        assert_eq!(bmap_beside(&img).as_deref(), Some(bmap.as_path()));
        assert_eq!(
            bmap_beside(&dir.path().join("a.img.xz")).as_deref(),
            Some(bmap.as_path())
        );
        let text = std::fs::read_to_string(&bmap).unwrap();
        let edited = text.replacen("<ImageSize> 1048576", "<ImageSize> 1048577", 1);
        let e = parse_bmap(&edited, "x").unwrap_err().to_string();
        assert!(e.contains("own checksum"), "{e}");
    }
}
