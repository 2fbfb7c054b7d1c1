//! `edgeimg update IMAGE-or-DEVICE BUNDLE`: writes a signed update bundle into the root slot
//! of a card or image that is not active, and arms it as the next boot's trial, offline. The
//! same checks as the node's edgeimg-update (signature against the fleet key inside the
//! image's verified root, board, arch, partitions, a newer version unless forced, every
//! digest) and, for a device, those of `flash` (a whole, unmounted disk that is not the
//! system's). Order: the signature is checked, the slot disarmed (its UKI removed), the root
//! written and checked, and only then the trial UKI written: an interrupted update leaves
//! the active slot booting.

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use serde::Serialize;

use crate::bundle::BundleManifest;
use crate::disk::layout::Slot;
use crate::fs::fat::FatVolume;
use crate::image::slots::SlotInfo;
use crate::util::version::ImageVersion;

/// What an update did.
#[derive(Debug, Serialize)]
pub struct UpdateReport {
    pub target: PathBuf,
    /// The slot written and armed.
    pub slot: Slot,
    pub version: String,
    /// The version of the active slot.
    pub from_version: String,
    /// The trial's boot file on the boot partition.
    pub boot_file: String,
    pub tries: u32,
    pub seconds: f64,
}

pub struct Options<'a> {
    pub target: &'a Path,
    pub bundle: &'a Path,
    /// `--force`: accept a version that is not newer.
    pub force: bool,
    /// Tries the loader gives the trial.
    pub tries: u32,
    /// The root of /sys, /proc and /dev for device checks (tests point it elsewhere).
    pub sys_root: &'a Path,
    /// Allow a fixed (non-removable) disk, as `flash --force` does.
    pub device_force: bool,
}

pub fn update(o: &Options) -> Result<UpdateReport> {
    let started = std::time::Instant::now();
    ensure!(o.tries >= 1, "--tries takes a number from 1");
    let what = o.target.display().to_string();
    let meta = std::fs::metadata(o.target).with_context(|| format!("{what}: cannot read it"))?;
    use std::os::unix::fs::FileTypeExt;
    if meta.file_type().is_block_device() {
        crate::flash::device::check_target(o.sys_root, o.target, o.device_force)?;
    } else if !meta.is_file() {
        bail!("{what} is neither an image file nor a disk");
    }
    let ins = crate::image::inspect::inspect_file(o.target, o.target)?;
    ensure!(
        ins.slots.len() == 2,
        "{what} has no A/B root slots (an image of an older edgeimg): flash a new image first"
    );
    let active = ins
        .slots
        .iter()
        .find(|s| s.active)
        .with_context(|| format!("{what}: no slot has boot files: not a bootable edgeimg image"))?
        .clone();
    let target_slot = active.slot.other();
    let target_info: SlotInfo = ins
        .slots
        .iter()
        .find(|s| s.slot == target_slot)
        .cloned()
        .expect("two slots");
    let is_uefi = ins
        .boot
        .files
        .iter()
        .any(|(p, _)| p.to_ascii_lowercase().starts_with("efi/"));
    ensure!(
        is_uefi,
        "{what}: offline updates of Raspberry Pi cards are not implemented in this build (use edgeimg-update on the node)"
    );
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(o.target)
        .with_context(|| format!("opening {what} for writing"))?;
    let part = |n: u32| {
        ins.table
            .partition(n)
            .cloned()
            .with_context(|| format!("{what} has no partition {n}"))
    };
    let active_part = part(active.partition)?;
    let target_part = part(target_info.partition)?;
    let boot_part = part(1)?;
    let env = ins
        .root
        .as_ref()
        .and_then(|r| r.listing.as_ref())
        .map(|l| l.build_env.clone())
        .unwrap_or_default();
    let running_version = active
        .version
        .clone()
        .or_else(|| env.get("IMAGE_VERSION").cloned())
        .unwrap_or_else(|| "0".into());
    let pem = crate::image::inspect::read_root_file(
        &file,
        active_part.offset(),
        &format!("/{}", crate::plan::UPDATE_PUB),
        64 * 1024,
    )?
    .with_context(|| {
        format!(
            "{what}: its root (slot {}) holds no fleet key /{}: build the image with --signing-key",
            active.slot,
            crate::plan::UPDATE_PUB
        )
    })?;
    let key = crate::bundle::keys::parse_public(
        &String::from_utf8_lossy(&pem),
        "the image's update.pub",
    )?;

    let bundle = File::open(o.bundle).with_context(|| format!("opening {}", o.bundle.display()))?;
    let table = ins.table.clone();
    let board = env.get("EDGEIMG_BOARD").cloned();
    let arch = env.get("EDGEIMG_ARCH").cloned();
    let running = running_version.clone();
    let target_offset = target_part.offset();
    let target_size = target_part.size();
    let boot_off = boot_part.offset();
    let boot_size = boot_part.size();
    let mut accept = |m: &BundleManifest| -> Result<Box<dyn std::io::Write + '_>> {
        if let Some(b) = &board {
            ensure!(
                &m.board == b,
                "the bundle is for board {}, {what} is {b}",
                m.board
            );
        }
        if let Some(a) = &arch {
            ensure!(&m.arch == a, "the bundle is for {}, {what} is {a}", m.arch);
        }
        ensure!(
            m.boot_method == "uefi",
            "the bundle boots with {}, {what} with uefi",
            m.boot_method
        );
        let uuid = |n: u32| table.partuuid(n).unwrap_or_default();
        ensure!(
            uuid(1) == m.partitions.boot
                && uuid(2) == m.partitions.root_a
                && uuid(3) == m.partitions.root_b
                && uuid(4) == m.partitions.data,
            "the bundle names other partitions than {what} has: build it for the same board and partition sizes"
        );
        ensure!(
            m.root.size <= target_size,
            "root.img ({} bytes) does not fit in slot {target_slot} ({target_size} bytes)",
            m.root.size
        );
        let newer = m.version()?
            > ImageVersion::parse(&running).unwrap_or_else(|_| ImageVersion::parse("0").unwrap());
        ensure!(
            newer || o.force,
            "v{} is not newer than the active v{running} (--force to install it anyway)",
            m.image_version
        );
        // Disarm: the slot's UKIs go before its root is overwritten.
        disarm(&file, boot_off, boot_size, target_slot, &what)?;
        let w = crate::util::window::OffsetWriter::bounded(&file, target_offset, target_size)
            .context("seeking to the slot")?;
        Ok(Box::new(std::io::BufWriter::with_capacity(1 << 20, w)))
    };
    let verified = crate::bundle::read(std::io::BufReader::new(bundle), &key, &mut accept)
        .with_context(|| format!("{}: refused", o.bundle.display()))?;
    file.sync_data().context("flushing the slot to disk")?;
    // Arm: the trial's UKI, written last.
    let uki = verified
        .boot
        .iter()
        .find(|(b, _)| b.slot.is_none_or(|s| s == target_slot))
        .with_context(|| format!("the bundle has no boot file for slot {target_slot}"))?;
    let boot_file = format!(
        "{}/edgeimg-{target_slot}+{}.efi",
        crate::boot::uefi::UKI_DIR,
        o.tries
    );
    {
        let mut vol = FatVolume::open_partition(&file, boot_off, boot_size)
            .with_context(|| format!("{what}: the boot partition"))?;
        vol.write_file(&boot_file, &uki.1)
            .with_context(|| format!("{what}: writing {boot_file}"))?;
        let trial = format!(
            "{target_slot} {} {running}\n",
            verified.manifest.image_version
        );
        vol.write_file("edgeimg/update/trial", trial.as_bytes())
            .with_context(|| format!("{what}: writing edgeimg/update/trial"))?;
    }
    file.sync_all().context("flushing to disk")?;
    Ok(UpdateReport {
        target: o.target.to_path_buf(),
        slot: target_slot,
        version: verified.manifest.image_version,
        from_version: running_version,
        boot_file,
        tries: o.tries,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Removes every UKI of `slot` from the boot partition.
fn disarm(file: &File, off: u64, size: u64, slot: Slot, what: &str) -> Result<()> {
    let mut vol = FatVolume::open_partition(file, off, size)
        .with_context(|| format!("{what}: the boot partition"))?;
    let names: Vec<String> = vol
        .list(crate::boot::uefi::UKI_DIR)
        .map(|l| l.into_iter().map(|e| e.name).collect())
        .unwrap_or_default();
    for n in names {
        let mine = crate::image::slots::parse_uki_name(&n).is_some_and(|u| u.slot == slot)
            || n.eq_ignore_ascii_case(&format!("edgeimg-{slot}.efi.new"));
        if mine {
            vol.remove(&format!("{}/{n}", crate::boot::uefi::UKI_DIR))
                .with_context(|| format!("{what}: removing {n}"))?;
        }
    }
    drop(vol);
    file.sync_data().context("flushing the boot partition")?;
    Ok(())
}
