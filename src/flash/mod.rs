//! `edgeimg flash`: writes an image (`.img`, or `.img.xz` streamed without unpacking to disk)
//! to a block device or a plain file, only the mapped blocks when a `.bmap` sits beside it
//! (their checksums checked while writing), flushes, reads back and verifies, then
//! personalizes the boot partition like `configure`.

pub mod device;
pub mod source;

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::image::personalize::{ConfigureReport, NodeArgs, NodeSet};
use crate::progress::Reporter;
use device::BlockDevice;
use source::{Bmap, ImageSource};

/// Bytes read and written at a time.
const CHUNK: usize = 1 << 20;

/// `edgeimg flash`.
#[derive(Args, Debug)]
pub struct FlashArgs {
    /// The image: .img or .img.xz (a .bmap beside it is used when present).
    pub image: PathBuf,
    /// The block device to overwrite (a whole disk, e.g. /dev/sdb). Without it (and without
    /// --device-file), the candidate devices are listed.
    #[arg(long, value_name = "DEV", conflicts_with = "device_file")]
    pub device: Option<PathBuf>,
    /// Write to a plain file instead of a device (created or truncated; tests, golden images).
    #[arg(long, value_name = "FILE")]
    pub device_file: Option<PathBuf>,
    /// Do not ask for confirmation.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Allow a non-removable disk.
    #[arg(long)]
    pub force: bool,
    /// Ignore a .bmap beside the image and write every block.
    #[arg(long)]
    pub no_bmap: bool,
    /// Use this bmap file instead of the one beside the image.
    #[arg(long, value_name = "FILE", conflicts_with = "no_bmap")]
    pub bmap: Option<PathBuf>,
    /// Skip reading back and verifying what was written.
    #[arg(long)]
    pub no_verify: bool,
    /// Root of the sysfs/procfs tree used to vet devices (for tests).
    #[arg(long, value_name = "DIR", default_value = "/", hide = true)]
    pub sys_root: PathBuf,
    #[command(flatten)]
    pub node: NodeArgs,
}

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

/// What writing produced.
#[derive(Debug, Clone, Copy)]
pub struct WriteStats {
    pub image_size: u64,
    pub bytes_written: u64,
}

/// How the written image is verified afterwards.
enum Check {
    /// The sha256 of the whole image as streamed.
    Whole([u8; 32]),
    /// The bmap's ranges.
    Ranges,
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
fn drop_cache(f: &File) {
    use std::os::fd::AsRawFd;
    // SAFETY: advisory call on a descriptor we own for the duration of the call.
    unsafe {
        libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
    }
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

/// `edgeimg flash`: the command's handler (prints and asks, like the other handlers).
pub fn flash_cmd(json: bool, quiet: bool, a: &FlashArgs, rep: &dyn Reporter) -> Result<()> {
    let target = match (&a.device, &a.device_file) {
        (None, None) => {
            let list = device::candidates(&a.sys_root)?;
            if json {
                println!("{}", serde_json::json!({ "candidates": list }));
            } else if list.is_empty() {
                println!("no removable, unmounted disk found: insert a card or USB stick (or name a fixed disk with --device DEV --force)");
            } else {
                println!("candidate devices (pass one with --device):");
                for d in &list {
                    println!("  {}", d.describe());
                }
            }
            return Ok(());
        }
        (Some(dev), _) => Target::Device(device::check_target(&a.sys_root, dev, a.force)?),
        (None, Some(f)) => {
            if f.starts_with("/dev/") {
                bail!(
                    "--device-file {}: that is a device; use --device so that it is checked",
                    f.display()
                );
            }
            let same =
                |a: &Path, b: &Path| match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
                    (Ok(x), Ok(y)) => x == y,
                    _ => false,
                };
            if same(f, &a.image) {
                bail!(
                    "--device-file {}: that is the image itself; name another file",
                    f.display()
                );
            }
            Target::File(f.clone())
        }
    };
    let node = if a.node.is_empty() {
        None
    } else {
        Some(a.node.resolve(rep)?)
    };
    let bmap = if a.no_bmap {
        None
    } else {
        a.bmap.clone().or_else(|| source::bmap_beside(&a.image))
    };
    if let Target::Device(d) = &target {
        if !a.yes {
            confirm(d)?;
        }
    }
    let report = flash(
        &a.image,
        &target,
        bmap.as_deref(),
        !a.no_verify,
        node.as_ref(),
        rep,
    )?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    if !quiet {
        println!(
            "flashed {} to {}: {} MiB written of {} MiB{} in {:.1} s ({:.1} MiB/s){}",
            report.image.display(),
            report.target.display(),
            report.bytes_written >> 20,
            report.image_size >> 20,
            if report.bmap.is_some() { " (bmap)" } else { "" },
            report.write_seconds,
            report.mib_per_second,
            if report.verified {
                format!(", verified in {:.1} s", report.verify_seconds)
            } else {
                ", not verified".into()
            }
        );
        if let Some(c) = &report.configured {
            crate::image::personalize::print_report(false, false, c)?;
        }
    }
    Ok(())
}

fn confirm(d: &BlockDevice) -> Result<()> {
    use std::io::{BufRead, IsTerminal, Write};
    if !std::io::stdin().is_terminal() {
        bail!(
            "about to overwrite {}: pass --yes to confirm without a terminal",
            d.describe()
        );
    }
    eprint!(
        "Overwrite {}? Everything on it is lost. Type yes: ",
        d.describe()
    );
    std::io::stderr().flush().ok();
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the confirmation")?;
    if line.trim() != "yes" {
        bail!("not confirmed: nothing written");
    }
    Ok(())
}
