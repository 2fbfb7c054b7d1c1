//! The image side of a flash: a raw `.img` or an `.img.xz` read as one stream, and the
//! `.bmap` beside it (parsed and its own checksum checked).

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

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
