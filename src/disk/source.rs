//! An image as a stream: a raw `.img` or an `.img.xz` read as one stream, the `.bmap` beside it
//! (parsed and its own checksum checked), and [`write_image`], which streams it onto a card
//! or a file (`flash`, and `inspect` unpacking an `.img.xz`).
//!
//! The first MiB of an image, where its partition table lives, is read ahead and held back
//! ([`ImageSource::head`]): it is checked to be a disk image before anything is written, and
//! written last, as coreos-installer does, so that a write that fails (or is killed) half way
//! never leaves a card that looks bootable.

use std::fs::File;
use std::io::{BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::progress::Reporter;
use crate::util::file_id::{FileId, FileKind};

use anyhow::{anyhow, bail, Context, Result};
use sha2::{Digest, Sha256};

use super::layout::SECTOR;
use super::read::{read_table, FoundTable};

/// Bytes at the start of an image that are read ahead, checked, and written last.
pub const HEAD: usize = 1 << 20;

/// An image opened for streaming.
pub struct ImageSource {
    pub path: PathBuf,
    pub compressed: bool,
    /// Bytes of the uncompressed image, when known before reading (raw images; from the bmap).
    pub size: Option<u64>,
    /// The opened image file, to refuse a target that is the image itself.
    pub id: FileId,
    /// The raw image for reading at offsets (not for an `.img.xz`, which only streams).
    raw: Option<File>,
    reader: Box<dyn Read + Send>,
    /// The first [`HEAD`] bytes, once read ahead; [`Self::read_full`] hands them out first.
    head: Option<Vec<u8>>,
    /// Bytes handed out by [`Self::read_full`] so far.
    consumed: u64,
    /// The partition table [`Self::disk_table`] found, checked again once the size is known.
    table: Option<FoundTable>,
}

impl ImageSource {
    pub fn open(path: &Path) -> Result<ImageSource> {
        let file = File::open(path).with_context(|| format!("opening image {}", path.display()))?;
        let meta = file
            .metadata()
            .with_context(|| format!("reading {}", path.display()))?;
        let compressed = is_xz(path, &file)?;
        let id = FileId::of(&meta);
        let regular = FileKind::of(&meta) == FileKind::Regular;
        let (size, raw, reader): (Option<u64>, Option<File>, Box<dyn Read + Send>) = if compressed {
            (
                None,
                None,
                Box::new(liblzma::read::XzDecoder::new_multi_decoder(
                    BufReader::with_capacity(1 << 20, file),
                )),
            )
        } else {
            // A pipe or a device tells no length: it streams until it ends.
            let raw = regular
                .then(|| file.try_clone())
                .transpose()
                .with_context(|| format!("reading {}", path.display()))?;
            (regular.then_some(meta.len()), raw, Box::new(file))
        };
        Ok(ImageSource {
            path: path.to_path_buf(),
            compressed,
            size,
            id,
            raw,
            reader,
            head: None,
            consumed: 0,
            table: None,
        })
    }

    /// The first [`HEAD`] bytes of the (uncompressed) image, fewer when it is shorter. Read
    /// ahead once, before anything else is read; [`Self::read_full`] still begins at byte 0.
    pub fn head(&mut self) -> Result<&[u8]> {
        if self.head.is_none() {
            if self.consumed > 0 {
                bail!(
                    "{}: the first MiB is read ahead before the image is streamed",
                    self.path.display()
                );
            }
            let mut buf = vec![0u8; HEAD];
            let n = self.read_stream(&mut buf)?;
            buf.truncate(n);
            self.head = Some(buf);
        }
        Ok(self.head.as_deref().unwrap_or_default())
    }

    /// Checks that this is a disk image edgeimg can flash, from its first MiB alone (so that
    /// an `.img.xz` is judged before anything is written): not empty, a whole number of
    /// 512-byte sectors, and a readable MBR or GPT with partitions inside the image. Returns
    /// that partition table. When the size is known only at the end of the stream (an
    /// `.img.xz` over 1 MiB), [`write_image`] checks it there, before it writes the head.
    pub fn disk_table(&mut self) -> Result<FoundTable> {
        let what = self.path.display().to_string();
        let known = self.size;
        let head = self.head()?;
        if head.is_empty() {
            return Err(not_an_image(&what, "it is empty".into()));
        }
        let table = read_table(head, "it").map_err(|e| not_an_image(&what, format!("{e:#}")))?;
        if table.partitions.is_empty() {
            return Err(not_an_image(
                &what,
                "its partition table lists no partitions".into(),
            ));
        }
        // A head shorter than HEAD is the whole image.
        let size = known.or((head.len() < HEAD).then_some(head.len() as u64));
        if let Some(n) = size {
            fits(&what, &table, n)?;
        }
        self.table = Some(table.clone());
        Ok(table)
    }

    /// Checks every range of `map` against this raw image before anything is written; returns
    /// the ranges that differ, or `None` for an `.img.xz`, whose ranges are checked as they
    /// are written (a pre-pass would decompress it twice).
    pub fn check_bmap(&self, map: &Bmap, rep: &dyn Reporter) -> Result<Option<Vec<RangeMismatch>>> {
        let Some(file) = &self.raw else {
            return Ok(None);
        };
        let mut task = rep.task(
            &format!("checking {} against its bmap", self.path.display()),
            map.mapped_bytes(),
        );
        let mut buf = vec![0u8; CHUNK];
        let mut bad = Vec::new();
        for (a, b, sum) in &map.ranges {
            let range = RangeMismatch::new(map, *a, *b);
            let mut h = Sha256::new();
            let mut pos = range.start;
            while pos < range.end {
                let n = ((range.end - pos) as usize).min(CHUNK);
                file.read_exact_at(&mut buf[..n], pos).with_context(|| {
                    format!(
                        "reading {} at byte {pos}, in the bmap's range {a}-{b}",
                        self.path.display()
                    )
                })?;
                h.update(&buf[..n]);
                pos += n as u64;
                task.advance(n as u64);
            }
            if &hex::encode(h.finalize()) != sum {
                bad.push(range);
            }
        }
        task.finish(if bad.is_empty() {
            "the image matches its bmap"
        } else {
            "the image differs from its bmap"
        });
        Ok(Some(bad))
    }

    /// Reads until `buf` is full or the image ends; returns the bytes read. Begins with the
    /// bytes read ahead by [`Self::head`].
    pub fn read_full(&mut self, buf: &mut [u8]) -> Result<usize> {
        let mut n = 0;
        // The stream stands after the head: it is read once the head is handed out.
        let mut stream = true;
        if let Some(head) = &self.head {
            let rest = usize::try_from(self.consumed)
                .ok()
                .and_then(|c| head.get(c..))
                .unwrap_or_default();
            n = rest.len().min(buf.len());
            buf[..n].copy_from_slice(&rest[..n]);
            stream = n == rest.len();
        }
        if stream && n < buf.len() {
            n += self.read_stream(&mut buf[n..])?;
        }
        self.consumed += n as u64;
        Ok(n)
    }

    fn read_stream(&mut self, buf: &mut [u8]) -> Result<usize> {
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

fn not_an_image(what: &str, why: String) -> anyhow::Error {
    anyhow!(
        "{what} is not a disk image edgeimg can flash: {why}; expected a .img or .img.xz made by \
         `edgeimg build` (whole 512-byte sectors, an MBR or GPT partition table in sector 0)"
    )
}

/// An image of `size` bytes with `table`: whole sectors, every partition inside.
fn fits(what: &str, table: &FoundTable, size: u64) -> Result<()> {
    if !size.is_multiple_of(SECTOR) {
        return Err(not_an_image(
            what,
            format!("it has {size} bytes, not a whole number of 512-byte sectors (truncated, or not an image?)"),
        ));
    }
    if let Some(p) = table
        .partitions
        .iter()
        .find(|p| p.offset() + p.size() > size)
    {
        return Err(not_an_image(
            what,
            format!(
                "its partition {} ends at byte {}, beyond the image's {size} bytes (truncated?)",
                p.number,
                p.offset() + p.size()
            ),
        ));
    }
    Ok(())
}

/// A bmap range whose bytes in the image do not match the bmap's checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("blocks {first}-{last} (bytes {start}-{end}) do not match the bmap's checksum")]
pub struct RangeMismatch {
    pub first: u64,
    pub last: u64,
    /// Byte offsets of the range in the image, `end` exclusive.
    pub start: u64,
    pub end: u64,
}

impl RangeMismatch {
    fn new(map: &Bmap, first: u64, last: u64) -> RangeMismatch {
        RangeMismatch {
            first,
            last,
            start: first * map.block_size,
            end: ((last + 1) * map.block_size).min(map.image_size),
        }
    }
}

fn is_xz(path: &Path, file: &File) -> Result<bool> {
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
/// range's sha256 is checked against the bmap as it is written (a mismatch is a
/// [`RangeMismatch`] error).
///
/// The first MiB is held back: on a device it is zeroed before anything else is written
/// (a card left half written by a crash has no partition table), and the image's own first
/// MiB is written only after the rest is written, checked and flushed.
pub fn write_image(
    src: &mut ImageSource,
    bmap: Option<&Bmap>,
    target: &File,
    what: &str,
    sparse: bool,
    rep: &dyn Reporter,
) -> Result<(WriteStats, [u8; 32])> {
    let head = src.head()?.to_vec();
    let held = head.len() as u64;
    if !sparse && held > 0 {
        target
            .write_all_at(&vec![0u8; head.len()], 0)
            .with_context(|| format!("clearing the partition table of {what}"))?;
    }
    let total = bmap.map(Bmap::mapped_bytes).or(src.size).unwrap_or(0);
    let mut task = rep.task(&format!("writing {what}"), total);
    let mut buf = vec![0u8; CHUNK];
    let mut pos: u64 = 0;
    let mut written: u64 = 0;
    let mut whole = Sha256::new();
    // Writes what lies beyond the held-back head; returns the bytes written.
    let write = |data: &[u8], at: u64| -> Result<u64> {
        let skip = held.saturating_sub(at).min(data.len() as u64);
        let rest = &data[skip as usize..];
        if !rest.is_empty() {
            target
                .write_all_at(rest, at + skip)
                .with_context(|| format!("writing {what} at byte {}", at + skip))?;
        }
        Ok(rest.len() as u64)
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
                written += write(data, pos)?;
            }
            pos += n as u64;
            task.advance(n as u64);
        },
        Some(map) => {
            for (a, b, sum) in &map.ranges {
                let range = RangeMismatch::new(map, *a, *b);
                // Skip to the range (read and drop: an xz stream cannot seek).
                while pos < range.start {
                    let want = ((range.start - pos) as usize).min(CHUNK);
                    let n = src.read_full(&mut buf[..want])?;
                    if n == 0 {
                        bail!("{} ends at byte {pos}, before the bmap's range {a}-{b}: the image and its bmap do not belong together", src.path.display());
                    }
                    pos += n as u64;
                }
                let mut h = Sha256::new();
                while pos < range.end {
                    let want = ((range.end - pos) as usize).min(CHUNK);
                    let n = src.read_full(&mut buf[..want])?;
                    if n == 0 {
                        bail!("{} ends at byte {pos}, inside the bmap's range {a}-{b}: the image is truncated or the bmap belongs to another image", src.path.display());
                    }
                    h.update(&buf[..n]);
                    written += write(&buf[..n], pos)?;
                    pos += n as u64;
                    task.advance(n as u64);
                }
                if &hex::encode(h.finalize()) != sum {
                    return Err(
                        anyhow::Error::new(range).context(format!("{}", src.path.display()))
                    );
                }
            }
            pos = map.image_size;
        }
    }
    // The size of a stream is known now: the image must still fit its table.
    if let Some(table) = &src.table {
        fits(&src.path.display().to_string(), table, pos)?;
    }
    if sparse {
        target
            .set_len(pos)
            .with_context(|| format!("setting the size of {what}"))?;
    }
    let flush = || {
        target
            .sync_all()
            .with_context(|| format!("flushing {what} (fsync)"))
    };
    // Everything else is on the medium before the partition table that makes it an image.
    flush()?;
    if !(sparse && head.iter().all(|&b| b == 0)) {
        target
            .write_all_at(&head, 0)
            .with_context(|| format!("writing the partition table (first MiB) of {what}"))?;
        written += held;
    }
    flush()?;
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
pub(crate) mod tests {
    use super::*;
    use crate::disk::layout::{PartRole, PartType, PartitionPlan, PartitionSpec, TableKind};
    use crate::progress::Silent;

    const MIB: u64 = 1 << 20;

    /// Deterministic bytes that are not a disk image.
    pub fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    /// A 6 MiB GPT image shaped like edgeimg's (boot, root; data in both) at `dir/name`, and
    /// its partition plan.
    pub fn small_image(dir: &Path, name: &str) -> (PathBuf, PartitionPlan) {
        let spec = |role, ptype, size| PartitionSpec {
            role,
            name: format!("{role}"),
            ptype,
            size,
            bootable: false,
        };
        let plan = PartitionPlan::new(
            TableKind::Gpt,
            &[
                spec(PartRole::Boot, PartType::Esp, 2 * MIB),
                spec(
                    PartRole::Root(crate::disk::layout::Slot::A),
                    PartType::LinuxRootX86_64,
                    2 * MIB,
                ),
            ],
            b"small",
        )
        .unwrap();
        let path = dir.join(name);
        let mut f = File::create(&path).unwrap();
        f.set_len(plan.disk_size).unwrap();
        crate::disk::write_table(&plan, &mut f).unwrap();
        f.write_all_at(&noise(100_000, 1), plan.offset(PartRole::Boot))
            .unwrap();
        f.write_all_at(
            &noise(300_000, 2),
            plan.offset(PartRole::Root(crate::disk::layout::Slot::A)) + 4096,
        )
        .unwrap();
        (path, plan)
    }

    fn xz_of(img: &Path) -> PathBuf {
        let out = PathBuf::from(format!("{}.xz", img.display()));
        crate::disk::xz::compress_xz(img, &out, 1, &Silent).unwrap();
        out
    }

    fn all(src: &mut ImageSource) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 300_000];
        loop {
            let n = src.read_full(&mut buf).unwrap();
            if n == 0 {
                return out;
            }
            out.extend_from_slice(&buf[..n]);
        }
    }

    #[test]
    fn the_head_is_read_ahead_and_the_stream_still_starts_at_zero() {
        let dir = tempfile::tempdir().unwrap();
        let (img, plan) = small_image(dir.path(), "a.img");
        let bytes = std::fs::read(&img).unwrap();
        for path in [img.clone(), xz_of(&img)] {
            let mut src = ImageSource::open(&path).unwrap();
            assert_eq!(src.head().unwrap(), &bytes[..HEAD]);
            let table = src.disk_table().unwrap();
            assert_eq!(table.disk_id, plan.disk_id);
            assert_eq!(all(&mut src), bytes, "{}", path.display());
        }
        // An image shorter than the head is all head.
        let short = dir.path().join("short.img");
        std::fs::write(&short, &bytes[..3 * 512]).unwrap();
        let mut src = ImageSource::open(&short).unwrap();
        assert_eq!(src.head().unwrap().len(), 3 * 512);
        assert_eq!(all(&mut src), &bytes[..3 * 512]);
    }

    #[test]
    fn what_is_not_a_disk_image_is_named_and_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (img, plan) = small_image(dir.path(), "a.img");
        let bytes = std::fs::read(&img).unwrap();
        let case = |name: &str, data: &[u8]| {
            let p = dir.path().join(name);
            std::fs::write(&p, data).unwrap();
            let e = format!(
                "{:#}",
                ImageSource::open(&p).unwrap().disk_table().unwrap_err()
            );
            assert!(
                e.contains(&p.display().to_string()) && e.contains("expected a .img"),
                "{e}"
            );
            let x = xz_of(&p);
            let ex = format!(
                "{:#}",
                ImageSource::open(&x).unwrap().disk_table().unwrap_err()
            );
            assert!(ex.contains(&x.display().to_string()), "{ex}");
            e
        };
        assert!(case("empty.img", b"").contains("it is empty"));
        assert!(case("noise.img", &noise(3 << 20, 5)).contains("no partition table"));
        let mut odd = bytes.clone();
        odd.push(0);
        let e = format!(
            "{:#}",
            ImageSource::open(&{
                let p = dir.path().join("odd.img");
                std::fs::write(&p, &odd).unwrap();
                p
            })
            .unwrap()
            .disk_table()
            .unwrap_err()
        );
        assert!(e.contains("not a whole number of 512-byte sectors"), "{e}");
        // Cut short inside its last partition: a raw image is refused at once, an .img.xz
        // when its stream ends, before its first MiB is written.
        let cut = dir.path().join("cut.img");
        std::fs::write(
            &cut,
            &bytes[..plan.offset(PartRole::Root(crate::disk::layout::Slot::A)) as usize + 512],
        )
        .unwrap();
        let e = format!(
            "{:#}",
            ImageSource::open(&cut).unwrap().disk_table().unwrap_err()
        );
        assert!(e.contains("beyond the image's"), "{e}");
        let mut src = ImageSource::open(&xz_of(&cut)).unwrap();
        src.disk_table().unwrap();
        let f = tempfile::tempfile().unwrap();
        let e = format!(
            "{:#}",
            write_image(&mut src, None, &f, "card", true, &Silent).unwrap_err()
        );
        assert!(e.contains("beyond the image's"), "{e}");
        let mut sector = [1u8; 512];
        f.read_exact_at(&mut sector, 0).unwrap();
        assert_eq!(sector, [0u8; 512], "the partition table was written");
    }

    #[test]
    fn the_pre_pass_names_the_ranges_that_changed() {
        let dir = tempfile::tempdir().unwrap();
        let (img, plan) = small_image(dir.path(), "a.img");
        let bmap = dir.path().join("a.bmap");
        crate::disk::bmap::write_bmap(&img, &bmap).unwrap();
        let map = read_bmap(&bmap).unwrap();
        let src = ImageSource::open(&img).unwrap();
        assert_eq!(src.check_bmap(&map, &Silent).unwrap(), Some(vec![]));
        let boot = plan.offset(PartRole::Boot);
        File::options()
            .write(true)
            .open(&img)
            .unwrap()
            .write_all_at(b"changed", boot + 10)
            .unwrap();
        let bad = ImageSource::open(&img)
            .unwrap()
            .check_bmap(&map, &Silent)
            .unwrap()
            .unwrap();
        assert_eq!(bad.len(), 1, "{bad:?}");
        assert!(
            bad[0].start <= boot + 10 && bad[0].end > boot + 10,
            "{bad:?}"
        );
        // An .img.xz is checked while it is written instead.
        let x = xz_of(&img);
        assert_eq!(
            ImageSource::open(&x)
                .unwrap()
                .check_bmap(&map, &Silent)
                .unwrap(),
            None
        );
    }

    #[test]
    fn the_head_is_written_last_and_cleared_first() {
        let dir = tempfile::tempdir().unwrap();
        let (img, _) = small_image(dir.path(), "a.img");
        let x = xz_of(&img);
        // The xz stream cut in half: the write fails after the body was partly written.
        let packed = std::fs::read(&x).unwrap();
        let cut = dir.path().join("cut.img.xz");
        std::fs::write(&cut, &packed[..packed.len() / 2]).unwrap();
        for sparse in [true, false] {
            let target = dir.path().join("card.img");
            // What a used card holds: an old partition table (this very image's).
            std::fs::copy(&img, &target).unwrap();
            let f = File::options()
                .read(true)
                .write(true)
                .open(&target)
                .unwrap();
            if sparse {
                f.set_len(0).unwrap();
            }
            let mut src = ImageSource::open(&cut).unwrap();
            let e = write_image(&mut src, None, &f, "card", sparse, &Silent).unwrap_err();
            assert!(format!("{e:#}").contains("xz stream"), "{e:#}");
            let mut head = vec![1u8; HEAD];
            let n = f.read_at(&mut head, 0).unwrap();
            assert!(
                head[..n].iter().all(|&b| b == 0),
                "sparse {sparse}: a partition table is on the half-written card"
            );
            let len = f.metadata().unwrap().len();
            let mut body = vec![0u8; (len as usize).saturating_sub(HEAD)];
            f.read_exact_at(&mut body, HEAD as u64).unwrap();
            assert!(
                body.iter().any(|&b| b != 0),
                "nothing of the body was written"
            );
        }
        // Whole, the same bytes arrive.
        let target = dir.path().join("whole.img");
        let f = File::create(&target).unwrap();
        let mut src = ImageSource::open(&x).unwrap();
        write_image(&mut src, None, &f, "whole", true, &Silent).unwrap();
        assert_eq!(
            std::fs::read(&target).unwrap(),
            std::fs::read(&img).unwrap()
        );
    }

    #[test]
    fn parses_edgeimg_bmaps_and_rejects_edits() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("a.img");
        let f = File::create(&img).unwrap();
        f.set_len(1 << 20).unwrap();
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
