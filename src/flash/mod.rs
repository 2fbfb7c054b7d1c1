//! `edgeimg flash`: writes an image (`.img`, or `.img.xz` streamed without unpacking to disk)
//! to a block device or a plain file, only the mapped blocks when a `.bmap` sits beside it,
//! flushes, reads back and verifies, then personalizes the boot partition like `configure`.
//!
//! Nothing lost, nothing leaked, in the manner of coreos-installer:
//! 1. [`prepare`] checks the inputs before any target is touched: the image must be a disk
//!    image (its first MiB read ahead, its partition table read), and a raw image must match
//!    every checksum of its bmap.
//! 2. The target is judged by what the opened descriptor is (`fstat`), never by the text of
//!    its path: a plain-file target must be a regular file and not the image or its bmap
//!    (same device and inode, whatever path led there); a device must be a block device, the
//!    one the kernel names. Only then is anything truncated or written.
//! 3. The image's first MiB is written last (`disk::source::write_image`), and a flash that
//!    fails is undone by a guard that also runs when it unwinds: a file flash created is
//!    removed, an existing one emptied, a device's first MiB zeroed.

pub mod device;

use std::fs::{File, Metadata, OpenOptions};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::disk::read::FoundTable;
use crate::disk::source::{
    self, drop_cache, write_image, Bmap, ImageSource, RangeMismatch, CHUNK, HEAD,
};
use crate::image::personalize::{ConfigureReport, NodeSet, BOOT_PARTITION};
use crate::progress::Reporter;
use crate::util::file_id::{FileId, FileKind};
use device::BlockDevice;

/// What a flash did.
#[derive(Debug, Clone, Serialize)]
pub struct FlashReport {
    pub image: PathBuf,
    pub target: PathBuf,
    pub device: Option<BlockDevice>,
    pub image_size: u64,
    pub bytes_written: u64,
    pub bmap: Option<PathBuf>,
    pub write_seconds: f64,
    pub mib_per_second: f64,
    pub verified: bool,
    pub verify_seconds: f64,
    pub configured: Option<ConfigureReport>,
}

/// How the written image is verified afterwards.
enum Check {
    /// The sha256 of the whole image as streamed.
    Whole([u8; 32]),
    /// The bmap's ranges.
    Ranges,
}

fn verify(
    target: &File,
    what: &str,
    check: &Check,
    bmap: Option<&Bmap>,
    size: u64,
    rep: &dyn Reporter,
) -> Result<()> {
    drop_cache(target);
    let mut buf = vec![0u8; CHUNK];
    let mut read_hash = |from: u64, to: u64, task: &mut Box<dyn crate::progress::Task>| {
        let mut h = Sha256::new();
        let mut pos = from;
        while pos < to {
            let n = ((to - pos) as usize).min(CHUNK);
            target
                .read_exact_at(&mut buf[..n], pos)
                .with_context(|| format!("reading back {what} at byte {pos}"))?;
            h.update(&buf[..n]);
            pos += n as u64;
            task.advance(n as u64);
        }
        Ok::<_, anyhow::Error>(h.finalize())
    };
    match (check, bmap) {
        (Check::Ranges, Some(map)) => {
            let mut task = rep.task(&format!("verifying {what}"), map.mapped_bytes());
            for (a, b, sum) in &map.ranges {
                let from = a * map.block_size;
                let to = ((b + 1) * map.block_size).min(map.image_size);
                let got = hex::encode(read_hash(from, to, &mut task)?);
                if &got != sum {
                    bail!("verifying {what}: blocks {a}-{b} read back differ from the image (the medium may be failing or fake-capacity)");
                }
            }
            task.finish("verified");
        }
        (Check::Whole(expected), _) => {
            let mut task = rep.task(&format!("verifying {what}"), size);
            let got = read_hash(0, size, &mut task)?;
            if got.as_slice() != expected {
                bail!("verifying {what}: the data read back differs from the image (the medium may be failing or fake-capacity)");
            }
            task.finish("verified");
        }
        (Check::Ranges, None) => unreachable!("ranges are only checked with a bmap"),
    }
    Ok(())
}

/// Where the image goes.
pub enum Target {
    Device(BlockDevice),
    File(PathBuf),
}

/// An image checked and ready to be written; nothing has been written yet.
pub struct Prepared {
    image: PathBuf,
    src: ImageSource,
    /// The image's partition table, read from its first MiB.
    table: FoundTable,
    bmap: Option<(PathBuf, Bmap)>,
    /// The files the target may not be: the image and its bmap.
    inputs: Vec<(FileId, PathBuf)>,
}

/// Opens and checks the image (and its bmap) before any target is touched: it must be a disk
/// image, and a raw image must match every range checksum of its bmap. An `.img.xz` is
/// checked against its bmap while it is written instead (a pre-pass would decompress it twice).
pub fn prepare(image: &Path, bmap_path: Option<&Path>, rep: &dyn Reporter) -> Result<Prepared> {
    let mut src = ImageSource::open(image)?;
    let table = src.disk_table()?;
    let mut inputs = vec![(src.id, image.to_path_buf())];
    let bmap = match bmap_path {
        None => None,
        Some(p) => {
            let map = source::read_bmap(p)?;
            let meta =
                std::fs::metadata(p).with_context(|| format!("reading bmap {}", p.display()))?;
            inputs.push((FileId::of(&meta), p.to_path_buf()));
            Some((p.to_path_buf(), map))
        }
    };
    if let (Some((p, m)), Some(s)) = (&bmap, src.size) {
        if m.image_size != s {
            bail!(
                "{}: the bmap {} describes a {}-byte image but the image has {s} bytes: they do not belong together; \
                 flash it with --no-bmap, or pass the image's own bmap with --bmap",
                image.display(),
                p.display(),
                m.image_size
            );
        }
    }
    if let Some((p, m)) = &bmap {
        if let Some(bad) = src.check_bmap(m, rep)?.filter(|b| !b.is_empty()) {
            bail!(
                "{}; nothing was written",
                changed_after_bmap(image, p, &table, &bad)
            );
        }
    }
    Ok(Prepared {
        image: image.to_path_buf(),
        src,
        table,
        bmap,
        inputs,
    })
}

/// Why an image does not match its bmap, and what to do. `edgeimg configure` changes only
/// the boot partition, so ranges all inside it mean a personalized image with the bmap of
/// its build.
fn changed_after_bmap(
    image: &Path,
    bmap: &Path,
    table: &FoundTable,
    bad: &[RangeMismatch],
) -> String {
    let inside = |r: &RangeMismatch, n: u32| {
        table
            .partition(n)
            .is_some_and(|p| r.start >= p.offset() && r.end <= p.offset() + p.size())
    };
    let mut blocks = bad
        .iter()
        .take(3)
        .map(|r| format!("{}-{}", r.first, r.last))
        .collect::<Vec<_>>()
        .join(", ");
    if bad.len() > 3 {
        blocks.push_str(&format!(" and {} more ranges", bad.len() - 3));
    }
    // bmaptool maps the uncompressed image.
    let shown = image.display().to_string();
    let raw = shown.strip_suffix(".xz").unwrap_or(&shown);
    let fix = format!(
        "flash it with --no-bmap, or make a fresh bmap (`bmaptool create -o NEW.bmap {raw}`) and pass it with --bmap NEW.bmap"
    );
    if bad.iter().all(|r| inside(r, BOOT_PARTITION)) {
        return format!(
            "{} was changed after its bmap {} was made: blocks {blocks}, in its boot partition \
             (partition {BOOT_PARTITION}), do not match the bmap's checksum, which is what \
             `edgeimg configure` does to an image after its build; {fix}",
            image.display(),
            bmap.display()
        );
    }
    let wheres = bad
        .iter()
        .map(|r| {
            table
                .partitions
                .iter()
                .find(|p| r.start < p.offset() + p.size() && r.end > p.offset())
                .map(|p| format!("partition {}", p.number))
                .unwrap_or_else(|| "outside the partitions".into())
        })
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "{}: blocks {blocks} ({wheres}) do not match the bmap's checksum in {}: the image was \
         changed or damaged after the bmap was made, or the bmap belongs to another image; {fix}",
        image.display(),
        bmap.display()
    )
}

/// Checks a `--device-file` target before anything is read or written: it must be absent
/// (it is created) or a regular file. What it names is judged again, by `fstat`, once open.
pub fn check_file_target(path: &Path) -> Result<()> {
    match std::fs::metadata(path) {
        Ok(meta) => plain_file(&meta, path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e)
            .with_context(|| format!("--device-file {}: cannot read what it is", path.display())),
    }
}

/// A plain-file target must be a regular file: a device, FIFO, socket or directory is never
/// written as if it were one.
fn plain_file(meta: &Metadata, path: &Path) -> Result<()> {
    match FileKind::of(meta) {
        FileKind::Regular => Ok(()),
        FileKind::BlockDevice => bail!(
            "--device-file {}: that is a block device; flash it with --device {} so that it is \
             checked (a whole, removable, unmounted disk, not the system's)",
            path.display(),
            path.display()
        ),
        kind => bail!(
            "--device-file {}: that is {}, not a plain file; name a file to write the image into \
             (or a disk with --device)",
            path.display(),
            kind.described()
        ),
    }
}

/// Refuses a target that is one of the inputs, by the identity of the opened objects.
fn not_an_input(meta: &Metadata, inputs: &[(FileId, PathBuf)], target: &Path) -> Result<()> {
    let id = FileId::of(meta);
    if let Some((_, input)) = inputs.iter().find(|(i, _)| *i == id) {
        bail!(
            "{} is the image itself, or its bmap: it is the same file as {} (a hard link, a \
             symlink or a bind mount of it, or the same device); name another target",
            target.display(),
            input.display()
        );
    }
    Ok(())
}

/// How a flash that did not finish is undone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Undo {
    /// Flash created the file: remove it.
    Remove,
    /// The file existed (its old contents went when it was emptied): empty it again.
    Empty,
    /// A device: zero its first bytes, the partition table.
    WipeHead(u64),
}

/// Opens a plain-file target without truncating it, or creates it; says whether it existed.
fn open_file(path: &Path) -> Result<(File, bool)> {
    let open = |create: bool| {
        let mut o = OpenOptions::new();
        // No controlling terminal and no waiting for a carrier, should a device be there.
        o.read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK);
        if create {
            o.create_new(true);
        }
        o.open(path)
    };
    match open(false) {
        Ok(f) => Ok((f, true)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => open(true)
            .map(|f| (f, false))
            .with_context(|| format!("creating {}", path.display())),
        Err(e) => Err(e).with_context(|| format!("opening {} for writing", path.display())),
    }
}

/// Opens the target and judges the opened object; returns it, whether it is a sparse plain
/// file, and how to undo a failed flash on it.
fn open_target(
    target: &Target,
    inputs: &[(FileId, PathBuf)],
    needed: Option<u64>,
) -> Result<(PathBuf, File, bool, Undo)> {
    match target {
        Target::Device(d) => {
            if let Some(n) = needed.filter(|n| *n > d.size) {
                bail!(
                    "{}: the image needs {n} bytes, the device has {}",
                    d.describe(),
                    d.size
                );
            }
            // O_EXCL on a block device fails while anything has it mounted or open exclusively.
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_EXCL | libc::O_NOCTTY)
                .open(&d.path)
                .with_context(|| {
                    format!(
                        "opening {} for writing (busy? permission: your user needs the `disk` group or run with sudo)",
                        d.path.display()
                    )
                })?;
            let meta = f
                .metadata()
                .with_context(|| format!("reading what {} is", d.path.display()))?;
            let kind = FileKind::of(&meta);
            if kind != FileKind::BlockDevice {
                bail!(
                    "{} is {}, not a block device: refusing to write to it as a disk",
                    d.path.display(),
                    kind.described()
                );
            }
            let devno = format!("{}:{}", libc::major(meta.rdev()), libc::minor(meta.rdev()));
            if !d.devno.is_empty() && d.devno != devno {
                bail!(
                    "{} is device {devno}, but the kernel's {} is {}: refusing to write to a node \
                     that is not the disk that was checked (is /dev stale?)",
                    d.path.display(),
                    d.name,
                    d.devno
                );
            }
            not_an_input(&meta, inputs, &d.path)?;
            Ok((
                d.path.clone(),
                f,
                false,
                Undo::WipeHead(d.size.min(HEAD as u64)),
            ))
        }
        Target::File(p) => {
            let (f, existed) = open_file(p)?;
            let judged = f
                .metadata()
                .with_context(|| format!("reading what {} is", p.display()))
                .and_then(|meta| {
                    plain_file(&meta, p)?;
                    not_an_input(&meta, inputs, p)
                })
                .and_then(|()| {
                    f.set_len(0)
                        .with_context(|| format!("emptying {}", p.display()))
                });
            if let Err(e) = judged {
                if !existed {
                    let _ = std::fs::remove_file(p);
                }
                return Err(e);
            }
            let undo = if existed { Undo::Empty } else { Undo::Remove };
            Ok((p.clone(), f, true, undo))
        }
    }
}

/// Undoes a flash that did not finish, also when it unwinds (a `Drop` guard, as in
/// coreos-installer).
struct Unfinished<'a> {
    file: &'a File,
    path: &'a Path,
    undo: Undo,
    done: bool,
}

impl Unfinished<'_> {
    /// Undoes the flash; says what was done, for the error.
    fn undo(&mut self) -> String {
        self.done = true;
        let p = self.path.display();
        let undone = match self.undo {
            Undo::Remove => std::fs::remove_file(self.path)
                .map(|()| format!("{p} was removed, so no half-written image is left")),
            Undo::Empty => self
                .file
                .set_len(0)
                .and_then(|()| self.file.sync_all())
                .map(|()| format!("{p} was emptied, so no half-written image is left")),
            Undo::WipeHead(n) => self
                .file
                .write_all_at(&vec![0u8; n as usize], 0)
                .and_then(|()| self.file.sync_all())
                .map(|()| {
                    format!(
                        "the first MiB of {p} (its partition table) was zeroed, so the half-written card is not mistaken for a good one"
                    )
                }),
        };
        undone.unwrap_or_else(|e| {
            format!("undoing it failed too ({e}): {p} holds a half-written image, do not use it")
        })
    }
}

impl Drop for Unfinished<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.undo();
        }
    }
}

/// What writing, verifying and personalizing produced.
struct Done {
    stats: source::WriteStats,
    write_seconds: f64,
    verify_seconds: f64,
    configured: Option<ConfigureReport>,
}

/// Writes, verifies and personalizes a prepared image. The node set is resolved by the caller
/// before anything is written, so that bad node input stops the flash before the device is
/// touched. A failure undoes the flash (see [`Undo`]) and says so.
pub fn flash(
    prepared: Prepared,
    target: &Target,
    do_verify: bool,
    node: Option<&NodeSet>,
    rep: &dyn Reporter,
) -> Result<FlashReport> {
    if let Some(set) = node {
        // Render once up front: a bad token file fails here, before the device is written.
        crate::image::personalize::render_set(set)?;
    }
    let Prepared {
        image,
        mut src,
        table,
        bmap,
        inputs,
    } = prepared;
    let needed = bmap.as_ref().map(|(_, m)| m.image_size).or(src.size);
    let (path, file, sparse, undo) = open_target(target, &inputs, needed)?;
    let mut guard = Unfinished {
        file: &file,
        path: &path,
        undo,
        done: false,
    };
    let map = bmap.as_ref().map(|(_, m)| m);
    let result = write_verify_configure(&mut src, map, &file, &path, sparse, do_verify, node, rep);
    let done = match result {
        Ok(done) => {
            guard.done = true;
            done
        }
        Err(e) => {
            let e = match (e.downcast_ref::<RangeMismatch>(), &bmap) {
                (Some(r), Some((p, _))) => anyhow!(changed_after_bmap(&image, p, &table, &[*r])),
                _ => e,
            };
            let undone = guard.undo();
            return Err(anyhow!("{e:#}; {undone}"));
        }
    };
    drop(guard);
    let stats = done.stats;
    Ok(FlashReport {
        image,
        target: path,
        device: match target {
            Target::Device(d) => Some(d.clone()),
            Target::File(_) => None,
        },
        image_size: stats.image_size,
        bytes_written: stats.bytes_written,
        bmap: bmap.map(|(p, _)| p),
        write_seconds: done.write_seconds,
        mib_per_second: stats.bytes_written as f64
            / (1u64 << 20) as f64
            / done.write_seconds.max(1e-6),
        verified: do_verify,
        verify_seconds: done.verify_seconds,
        configured: done.configured,
    })
}

#[allow(clippy::too_many_arguments)]
fn write_verify_configure(
    src: &mut ImageSource,
    bmap: Option<&Bmap>,
    file: &File,
    path: &Path,
    sparse: bool,
    do_verify: bool,
    node: Option<&NodeSet>,
    rep: &dyn Reporter,
) -> Result<Done> {
    let what = path.display().to_string();
    let started = Instant::now();
    let (stats, whole) = write_image(src, bmap, file, &what, sparse, rep)?;
    let write_seconds = started.elapsed().as_secs_f64();
    let verify_started = Instant::now();
    if do_verify {
        let check = if bmap.is_some() {
            Check::Ranges
        } else {
            Check::Whole(whole)
        };
        verify(file, &what, &check, bmap, stats.image_size, rep)?;
    }
    let verify_seconds = verify_started.elapsed().as_secs_f64();
    let configured = match node {
        Some(set) => {
            rep.step(&format!("personalizing {what}"));
            Some(crate::image::personalize::configure_open(file, path, set)?)
        }
        None => None,
    };
    Ok(Done {
        stats,
        write_seconds,
        verify_seconds,
        configured,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::layout::PartRole;
    use crate::disk::source::tests::{noise, small_image};
    use crate::progress::Silent;

    fn err<T>(r: Result<T>) -> String {
        match r {
            Ok(_) => panic!("accepted"),
            Err(e) => format!("{e:#}"),
        }
    }

    #[test]
    fn plain_file_targets_are_judged_by_what_they_are() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        check_file_target(&d.join("new.img")).expect("an absent file is created");
        std::fs::write(d.join("old.img"), b"x").unwrap();
        check_file_target(&d.join("old.img")).unwrap();
        let fifo = d.join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid C string.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let sock = d.join("sock");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let null_link = d.join("null-link");
        std::os::unix::fs::symlink("/dev/null", &null_link).unwrap();
        for (p, kind) in [
            (fifo.as_path(), "FIFO"),
            (sock.as_path(), "a socket"),
            (d, "a directory"),
            (null_link.as_path(), "a character device"),
        ] {
            let e = err(check_file_target(p));
            assert!(
                e.contains(&p.display().to_string()) && e.contains(kind),
                "{e}"
            );
            // Reached anyway (the path changed after the first look): judged by fstat once
            // open, when it opens at all (a directory or a socket does not).
            let e = err(open_target(&Target::File(p.to_path_buf()), &[], None));
            assert!(
                e.contains(&p.display().to_string()) && (e.contains(kind) || e.contains("opening")),
                "{e}"
            );
        }
        // A block device, looked at but never opened.
        if let Some(blk) = std::fs::read_dir("/dev").unwrap().flatten().find(|e| {
            e.metadata()
                .is_ok_and(|m| FileKind::of(&m) == FileKind::BlockDevice)
        }) {
            let e = err(check_file_target(&blk.path()));
            assert!(
                e.contains("a block device") && e.contains("--device"),
                "{e}"
            );
        }
    }

    #[test]
    fn a_target_that_is_an_input_is_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let (img, _) = small_image(dir.path(), "a.img");
        let bytes = std::fs::read(&img).unwrap();
        let hard = dir.path().join("hard.img");
        std::fs::hard_link(&img, &hard).unwrap();
        let p = prepare(&img, None, &Silent).unwrap();
        let e = err(flash(p, &Target::File(hard.clone()), true, None, &Silent));
        assert!(e.contains("is the image itself"), "{e}");
        assert_eq!(std::fs::read(&img).unwrap(), bytes);
        // Its bmap neither.
        let bmap = dir.path().join("a.bmap");
        crate::disk::bmap::write_bmap(&img, &bmap).unwrap();
        let text = std::fs::read(&bmap).unwrap();
        let p = prepare(&img, Some(&bmap), &Silent).unwrap();
        let e = err(flash(p, &Target::File(bmap.clone()), true, None, &Silent));
        assert!(e.contains("its bmap") && e.contains("a.bmap"), "{e}");
        assert_eq!(std::fs::read(&bmap).unwrap(), text);
    }

    #[test]
    fn a_device_target_must_open_as_the_block_device_checked() {
        let dir = tempfile::tempdir().unwrap();
        let (img, _) = small_image(dir.path(), "a.img");
        let fake = dir.path().join("sdz");
        std::fs::write(&fake, b"a regular file").unwrap();
        let dev = |path: &Path| BlockDevice {
            name: "sdz".into(),
            path: path.to_path_buf(),
            devno: "8:240".into(),
            size: 1 << 30,
            removable: true,
            read_only: false,
            model: "Fake".into(),
            serial: String::new(),
            partitions: vec![],
            mounts: vec![],
            system: false,
        };
        for (path, kind) in [
            (fake.as_path(), "a regular file"),
            (Path::new("/dev/null"), "a character device"),
        ] {
            let p = prepare(&img, None, &Silent).unwrap();
            let e = err(flash(p, &Target::Device(dev(path)), true, None, &Silent));
            assert!(e.contains(kind) && e.contains("not a block device"), "{e}");
        }
        assert_eq!(std::fs::read(&fake).unwrap(), b"a regular file");
    }

    #[test]
    fn a_failed_flash_leaves_no_half_image() {
        let dir = tempfile::tempdir().unwrap();
        let (img, _) = small_image(dir.path(), "a.img");
        let xz = dir.path().join("a.img.xz");
        crate::disk::xz::compress_xz(&img, &xz, 1, &Silent).unwrap();
        let packed = std::fs::read(&xz).unwrap();
        let cut = dir.path().join("cut.img.xz");
        std::fs::write(&cut, &packed[..packed.len() * 2 / 3]).unwrap();
        // A file flash creates is removed.
        let new = dir.path().join("new.img");
        let p = prepare(&cut, None, &Silent).unwrap();
        let e = err(flash(p, &Target::File(new.clone()), true, None, &Silent));
        assert!(e.contains("xz stream") && e.contains("was removed"), "{e}");
        assert!(!new.exists());
        // One that existed is emptied.
        let old = dir.path().join("old.img");
        std::fs::write(&old, noise(5000, 3)).unwrap();
        let p = prepare(&cut, None, &Silent).unwrap();
        let e = err(flash(p, &Target::File(old.clone()), true, None, &Silent));
        assert!(e.contains("was emptied"), "{e}");
        assert_eq!(std::fs::metadata(&old).unwrap().len(), 0);
        // Whole, it arrives and verifies.
        let p = prepare(&xz, None, &Silent).unwrap();
        let r = flash(p, &Target::File(new.clone()), true, None, &Silent).unwrap();
        assert!(r.verified);
        assert_eq!(std::fs::read(&new).unwrap(), std::fs::read(&img).unwrap());
    }

    #[test]
    fn undoing_a_device_zeroes_its_partition_table() {
        let dir = tempfile::tempdir().unwrap();
        let (img, _) = small_image(dir.path(), "card");
        let f = File::options().read(true).write(true).open(&img).unwrap();
        let mut g = Unfinished {
            file: &f,
            path: &img,
            undo: Undo::WipeHead(HEAD as u64),
            done: false,
        };
        let note = g.undo();
        assert!(
            note.contains("partition table") && note.contains("zeroed"),
            "{note}"
        );
        let mut head = vec![1u8; HEAD];
        f.read_exact_at(&mut head, 0).unwrap();
        assert!(head.iter().all(|&b| b == 0));
        assert!(crate::disk::read::read_table(&f, "card").is_err());
        // Dropped unfinished (a panic unwinding), the guard undoes too.
        let (img, plan) = small_image(dir.path(), "card2");
        let f = File::options().read(true).write(true).open(&img).unwrap();
        drop(Unfinished {
            file: &f,
            path: &img,
            undo: Undo::WipeHead(HEAD as u64),
            done: false,
        });
        let mut sector = [1u8; 512];
        f.read_exact_at(&mut sector, 0).unwrap();
        assert_eq!(sector, [0u8; 512]);
        // The rest of the card is left as it was.
        let mut boot = [0u8; 16];
        f.read_exact_at(&mut boot, plan.offset(PartRole::Boot))
            .unwrap();
        assert_eq!(&boot[..], &noise(100_000, 1)[..16]);
    }

    #[test]
    fn a_changed_boot_partition_is_named_as_configure_does_it() {
        let dir = tempfile::tempdir().unwrap();
        let (img, plan) = small_image(dir.path(), "a.img");
        let bmap = dir.path().join("a.bmap");
        crate::disk::bmap::write_bmap(&img, &bmap).unwrap();
        let f = File::options().write(true).open(&img).unwrap();
        f.write_all_at(b"personalized", plan.offset(PartRole::Boot) + 700)
            .unwrap();
        let e = err(prepare(&img, Some(&bmap), &Silent));
        assert!(
            e.contains("was changed after its bmap")
                && e.contains("boot partition")
                && e.contains("edgeimg configure")
                && e.contains("--no-bmap")
                && e.contains("nothing was written"),
            "{e}"
        );
        // A change elsewhere is not blamed on configure.
        f.write_all_at(
            b"damaged",
            plan.offset(PartRole::Root(crate::disk::layout::Slot::A)) + 5000,
        )
        .unwrap();
        let e = err(prepare(&img, Some(&bmap), &Silent));
        assert!(
            e.contains("partition 1, partition 2") && !e.contains("edgeimg configure"),
            "{e}"
        );
    }
}
