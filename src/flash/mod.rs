//! `edgeimg flash`: writes an image (`.img`, or `.img.xz` streamed without unpacking to disk)
//! to a block device or a plain file, only the mapped blocks when a `.bmap` sits beside it
//! (their checksums checked while writing), flushes, reads back and verifies, then
//! personalizes the boot partition like `configure`.

pub mod device;

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::disk::source::{self, drop_cache, write_image, Bmap, ImageSource, CHUNK};
use crate::image::personalize::{ConfigureReport, NodeSet};
use crate::progress::Reporter;
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

/// Writes, verifies and personalizes. The node set is resolved by the caller before anything
/// is written, so that bad node input stops the flash before the device is touched.
pub fn flash(
    image: &Path,
    target: &Target,
    bmap_path: Option<&Path>,
    do_verify: bool,
    node: Option<&NodeSet>,
    rep: &dyn Reporter,
) -> Result<FlashReport> {
    let bmap = bmap_path.map(source::read_bmap).transpose()?;
    if let Some(set) = node {
        // Render once up front: a bad token file fails here, before the device is written.
        crate::image::personalize::render_set(set)?;
    }
    let mut src = ImageSource::open(image)?;
    if let (Some(m), Some(s)) = (&bmap, src.size) {
        if m.image_size != s {
            bail!(
                "{}: the bmap describes a {}-byte image but the image has {s} bytes: they do not belong together",
                image.display(),
                m.image_size
            );
        }
    }
    let (path, file, sparse) = match target {
        Target::Device(d) => {
            let needed = bmap.as_ref().map(|m| m.image_size).or(src.size);
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
                .custom_flags(libc::O_EXCL)
                .open(&d.path)
                .with_context(|| {
                    format!(
                        "opening {} for writing (busy? permission: your user needs the `disk` group or run with sudo)",
                        d.path.display()
                    )
                })?;
            (d.path.clone(), f, false)
        }
        Target::File(p) => {
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(p)
                .with_context(|| format!("creating {}", p.display()))?;
            (p.clone(), f, true)
        }
    };
    let what = path.display().to_string();
    let started = Instant::now();
    let (stats, whole) = write_image(&mut src, bmap.as_ref(), &file, &what, sparse, rep)?;
    let write_seconds = started.elapsed().as_secs_f64();
    let verify_started = Instant::now();
    if do_verify {
        let check = if bmap.is_some() {
            Check::Ranges
        } else {
            Check::Whole(whole)
        };
        verify(&file, &what, &check, bmap.as_ref(), stats.image_size, rep)?;
    }
    let verify_seconds = verify_started.elapsed().as_secs_f64();
    drop(file);
    let configured = match node {
        Some(set) => {
            rep.step(&format!("personalizing {what}"));
            Some(crate::image::personalize::configure(&path, set)?)
        }
        None => None,
    };
    Ok(FlashReport {
        image: image.to_path_buf(),
        target: path,
        device: match target {
            Target::Device(d) => Some(d.clone()),
            Target::File(_) => None,
        },
        image_size: stats.image_size,
        bytes_written: stats.bytes_written,
        bmap: bmap_path.map(Path::to_path_buf),
        write_seconds,
        mib_per_second: stats.bytes_written as f64 / (1u64 << 20) as f64 / write_seconds.max(1e-6),
        verified: do_verify,
        verify_seconds,
        configured,
    })
}
