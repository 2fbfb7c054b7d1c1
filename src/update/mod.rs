//! `edgeimg update IMAGE-or-DEVICE BUNDLE`: writes a signed update bundle into the root slot
//! of a card or image that is not active, and arms it as the next boot's trial, offline. The
//! same checks as the node's edgeimg-update (signature against the fleet key inside the
//! image's verified root, board, arch, partitions, a newer version unless forced, every
//! digest) and, for a device, those of `flash` (a whole, unmounted disk that is not the
//! system's). Order: the signature is checked, the slot disarmed (its UKI, or its Pi folder
//! and tryboot.txt, removed), the root written and checked, and only then the trial's boot
//! files written: an interrupted update leaves the active slot booting.
//!
//! How the trial is armed is the board loader's business ([`Loader`]): systemd-boot boots a
//! `+TRIES` UKI by itself, and so does U-Boot on a Pi with `trial.txt`; the Pi firmware's
//! one-shot tryboot flag lives in its RAM, so a card without U-Boot gets `tryboot.txt` and a
//! trial record marked `offline`, and the running slot's init asks the firmware for the
//! trial (`reboot '0 tryboot'`) on the card's next boot.

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use serde::Serialize;

use crate::boot::rpi::{config_for_slot, trial_txt, SLOTS_TXT, TRIAL_TXT, U_BOOT_KERNEL};
use crate::bundle::BundleManifest;
use crate::disk::layout::Slot;
use crate::fs::fat::FatVolume;
use crate::image::slots::{Loader, SlotInfo};
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
    /// What boots the trial.
    pub loader: Loader,
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
    check_target(o, &what)?;
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
    let loader = ins.boot.loader.with_context(|| {
        format!("{what}: its boot partition has neither EFI/ nor config.txt: not an edgeimg image")
    })?;
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
    let target_size = target_part.size();
    let card = Card {
        what: &what,
        board: env.get("EDGEIMG_BOARD").cloned(),
        arch: env.get("EDGEIMG_ARCH").cloned(),
        loader,
        table: &ins.table,
        slot: target_slot,
        slot_size: target_size,
        running: &running_version,
    };
    let target_offset = target_part.offset();
    let boot_off = boot_part.offset();
    let boot_size = boot_part.size();
    let mut accept = |m: &BundleManifest| -> Result<Box<dyn std::io::Write + '_>> {
        card.accepts(m, o.force)?;
        // Disarm: the slot's boot files go before its root is overwritten.
        disarm(&file, boot_off, boot_size, loader, target_slot, &what)?;
        let w = crate::util::window::OffsetWriter::bounded(&file, target_offset, target_size)
            .context("seeking to the slot")?;
        Ok(Box::new(std::io::BufWriter::with_capacity(1 << 20, w)))
    };
    let verified = crate::bundle::read(std::io::BufReader::new(bundle), &key, &mut accept)
        .with_context(|| format!("{}: refused", o.bundle.display()))?;
    file.sync_data().context("flushing the slot to disk")?;
    // Arm: the trial's boot files, written last.
    let mut vol = FatVolume::open_partition(&file, boot_off, boot_size)
        .with_context(|| format!("{what}: the boot partition"))?;
    let trial = Trial {
        slot: target_slot,
        version: &verified.manifest.target.image_version,
        from: &running_version,
    };
    let (boot_file, tries) = match loader {
        Loader::SystemdBoot => (
            arm_uefi(&mut vol, &verified, &trial, o.tries, &what)?,
            o.tries,
        ),
        // tryboot is one boot: a crash, a hang or a power cut in it boots config.txt's slot.
        Loader::PiFirmware => (
            arm_rpi(&mut vol, &verified, &trial, Arm::TrybootTxt, &what)?,
            1,
        ),
        // boot.scr counts the one try down before the kernel runs.
        Loader::UBoot => (
            arm_rpi(&mut vol, &verified, &trial, Arm::TrialTxt, &what)?,
            1,
        ),
    };
    drop(vol);
    file.sync_all().context("flushing to disk")?;
    Ok(UpdateReport {
        target: o.target.to_path_buf(),
        slot: target_slot,
        version: verified.manifest.target.image_version,
        from_version: running_version,
        boot_file,
        loader,
        tries,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// `flash`'s checks for a device (a whole disk, not mounted, not the system's, writable), or
/// a regular image file.
fn check_target(o: &Options, what: &str) -> Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let is_device = o.target.starts_with("/dev/")
        || std::fs::metadata(o.target).is_ok_and(|m| m.file_type().is_block_device());
    if is_device {
        crate::flash::device::check_target(o.sys_root, o.target, o.device_force)?;
    }
    let meta = std::fs::metadata(o.target).with_context(|| format!("{what}: cannot read it"))?;
    if !is_device && !meta.is_file() {
        bail!("{what} is neither an image file nor a disk");
    }
    Ok(())
}

/// What a bundle must match on the card: its board and arch (from the active root's
/// build.env, when readable), its loader, its partitions, the free slot's size, and a version
/// newer than the running one.
struct Card<'a> {
    what: &'a str,
    board: Option<String>,
    arch: Option<String>,
    loader: Loader,
    table: &'a crate::disk::read::FoundTable,
    /// The slot the update writes, and its size.
    slot: Slot,
    slot_size: u64,
    running: &'a str,
}

impl Card<'_> {
    /// Checks a bundle's signed manifest before anything is written.
    fn accepts(&self, m: &BundleManifest, force: bool) -> Result<()> {
        let what = self.what;
        let t = &m.target;
        if let Some(b) = &self.board {
            ensure!(
                &t.board == b,
                "the bundle is for board {}, {what} is {b}",
                t.board
            );
        }
        if let Some(a) = &self.arch {
            ensure!(&t.arch == a, "the bundle is for {}, {what} is {a}", t.arch);
        }
        ensure!(
            t.boot_method == self.loader.boot_method(),
            "the bundle boots with {}, {what} with {}",
            t.boot_method,
            self.loader.boot_method()
        );
        let uuid = |n: u32| self.table.partuuid(n).unwrap_or_default();
        ensure!(
            uuid(1) == t.partitions.boot
                && uuid(2) == t.partitions.root_a
                && uuid(3) == t.partitions.root_b
                && uuid(4) == t.partitions.data,
            "the bundle names other partitions than {what} has: build it for the same board and partition sizes"
        );
        ensure!(
            m.root.size <= self.slot_size,
            "root.img ({} bytes) does not fit in slot {} ({} bytes)",
            m.root.size,
            self.slot,
            self.slot_size
        );
        let running = self.running;
        let newer = m.version()?
            > ImageVersion::parse(running).unwrap_or_else(|_| ImageVersion::parse("0").unwrap());
        ensure!(
            newer || force,
            "v{} is not newer than the active v{running} (--force to install it anyway)",
            t.image_version
        );
        Ok(())
    }
}

/// The trial being armed: slot, its version, the active slot's version.
struct Trial<'a> {
    slot: Slot,
    version: &'a str,
    from: &'a str,
}

/// Where the trial record lives on the boot partition: `trial` in slot.sh's SLOT_STATE.
fn trial_file() -> String {
    use crate::node::contract::{BOOT_DIR, SLOT_STATE_DIR};
    format!("{BOOT_DIR}/{SLOT_STATE_DIR}/trial")
}

/// systemd-boot: the slot's UKI as `edgeimg-S+TRIES.efi`, which the loader boots next by
/// itself (newest version first) and counts down; the record, in slot.sh's words.
fn arm_uefi<F: std::io::Read + std::io::Write + std::io::Seek>(
    vol: &mut FatVolume<F>,
    verified: &crate::bundle::Verified,
    t: &Trial,
    tries: u32,
    what: &str,
) -> Result<String> {
    let uki = verified
        .boot
        .iter()
        .find(|(b, _)| b.slot.is_none_or(|s| s == t.slot))
        .with_context(|| format!("the bundle has no boot file for slot {}", t.slot))?;
    let boot_file = format!(
        "{}/edgeimg-{}+{tries}.efi",
        crate::boot::uefi::UKI_DIR,
        t.slot
    );
    vol.write_file(&boot_file, &uki.1)
        .with_context(|| format!("{what}: writing {boot_file}"))?;
    let record = format!("{} {} {}\n", t.slot, t.version, t.from);
    let trial = trial_file();
    vol.write_file(&trial, record.as_bytes())
        .with_context(|| format!("{what}: writing {trial}"))?;
    Ok(boot_file)
}

/// How a Pi card's trial is armed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Arm {
    /// The firmware alone: `tryboot.txt`, taken under the one-shot flag the running slot asks
    /// for on the card's next boot.
    TrybootTxt,
    /// U-Boot: `trial.txt` with one try, which boot.scr takes on the card's next boot.
    TrialTxt,
}

/// Raspberry Pi: the slot's folder (kernel last: the firmware, or boot.scr, skips a folder
/// with no kernel), then what arms it (tryboot.txt, config.txt naming that folder; or
/// trial.txt for U-Boot), then the record. Without U-Boot its boot id is `offline`: the next
/// boot is the active slot's, and its init reboots into the trial with the firmware's
/// one-shot flag (edgeimg-update --boot).
fn arm_rpi<F: std::io::Read + std::io::Write + std::io::Seek>(
    vol: &mut FatVolume<F>,
    verified: &crate::bundle::Verified,
    t: &Trial,
    arm: Arm,
    what: &str,
) -> Result<String> {
    let config = read_config(vol, what)?;
    let kernel_name = match arm {
        Arm::TrybootTxt => rpi_kernel_name(&config),
        Arm::TrialTxt => U_BOOT_KERNEL.to_string(),
    };
    let kernel = format!("slot-{}/{kernel_name}", t.slot);
    let mut files: Vec<(String, &[u8])> = verified
        .boot
        .iter()
        .filter(|(b, _)| b.slot.is_none_or(|s| s == t.slot))
        .map(|(b, data)| (b.path_for(t.slot), &data[..]))
        .collect();
    ensure!(
        files.iter().any(|(p, _)| p.eq_ignore_ascii_case(&kernel)),
        "the bundle has no {kernel} (config.txt's kernel=) for slot {}",
        t.slot
    );
    files.sort_by_key(|(p, _)| p.eq_ignore_ascii_case(&kernel));
    for (path, data) in &files {
        vol.write_file(path, data)
            .with_context(|| format!("{what}: writing {path}"))?;
    }
    let (armed, text) = match arm {
        Arm::TrybootTxt => ("tryboot.txt", config_for_slot(&config, t.slot)),
        Arm::TrialTxt => (TRIAL_TXT, trial_txt(t.slot, 1)),
    };
    vol.write_file(armed, text.as_bytes())
        .with_context(|| format!("{what}: writing {armed}"))?;
    let record = format!("{} {} {} offline\n", t.slot, t.version, t.from);
    let trial = trial_file();
    vol.write_file(&trial, record.as_bytes())
        .with_context(|| format!("{what}: writing {trial}"))?;
    Ok(format!("slot-{}/", t.slot))
}

fn read_config<F: std::io::Read + std::io::Write + std::io::Seek>(
    vol: &mut FatVolume<F>,
    what: &str,
) -> Result<String> {
    let bytes = vol
        .read_file("config.txt")
        .with_context(|| format!("{what}: reading config.txt"))?
        .with_context(|| format!("{what}: the boot partition has no config.txt"))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// config.txt's `kernel=` (the file name in a slot folder), as slot.sh reads it.
fn rpi_kernel_name(config: &str) -> String {
    config
        .lines()
        .rev()
        .find_map(|l| {
            l.trim()
                .strip_prefix("kernel=")
                .map(|k| k.trim().to_string())
        })
        .filter(|k| !k.is_empty())
        .unwrap_or_else(|| "kernel8.img".into())
}

/// Makes `slot` unbootable: its UKIs (systemd-boot), or tryboot.txt and its folder (Pi).
fn disarm(file: &File, off: u64, size: u64, loader: Loader, slot: Slot, what: &str) -> Result<()> {
    let mut vol = FatVolume::open_partition(file, off, size)
        .with_context(|| format!("{what}: the boot partition"))?;
    match loader {
        Loader::SystemdBoot => {
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
        }
        Loader::UBoot => {
            let slots_txt = vol
                .read_file(SLOTS_TXT)
                .ok()
                .flatten()
                .map(|b| String::from_utf8_lossy(&b).into_owned());
            let good = crate::image::slots::uboot_good(slots_txt.as_deref());
            ensure!(
                good != slot,
                "{what}: slots.txt names slot {slot} good, the one the update would overwrite"
            );
            // The trial first, then the kernel: boot.scr skips a folder without it.
            let kernel = format!("slot-{slot}/{U_BOOT_KERNEL}");
            for path in [TRIAL_TXT, &kernel, &format!("slot-{slot}")] {
                vol.remove(path)
                    .with_context(|| format!("{what}: removing {path}"))?;
            }
        }
        Loader::PiFirmware => {
            let config = read_config(&mut vol, what)?;
            ensure!(
                crate::image::slots::os_prefix_slot(&config) != Some(slot),
                "{what}: config.txt boots slot {slot}, the one the update would overwrite"
            );
            // The kernel first: without it the firmware will not take the folder.
            let kernel = format!("slot-{slot}/{}", rpi_kernel_name(&config));
            for path in ["tryboot.txt", &kernel, &format!("slot-{slot}")] {
                vol.remove(path)
                    .with_context(|| format!("{what}: removing {path}"))?;
            }
        }
    }
    drop(vol);
    file.sync_data().context("flushing the boot partition")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(root: &Path, dev: &str) -> String {
        let bundle = root.join("x.update");
        std::fs::write(&bundle, b"").unwrap();
        let e = update(&Options {
            target: Path::new(dev),
            bundle: &bundle,
            force: false,
            tries: 3,
            sys_root: root,
            device_force: false,
        })
        .err()
        .unwrap();
        format!("{e:#}")
    }

    /// A U-Boot Pi card: MBR disk signature 1234abcd, four partitions, a 1 MiB slot, v2.
    fn pi_card_table() -> crate::disk::read::FoundTable {
        let part = |number| crate::disk::read::FoundPartition {
            number,
            start_lba: 2048 * number as u64,
            size_lba: 2048,
            ptype: "83".into(),
            uuid: String::new(),
            name: String::new(),
            bootable: number == 1,
        };
        crate::disk::read::FoundTable {
            table: crate::disk::layout::TableKind::Mbr,
            disk_id: "1234abcd".into(),
            partitions: (1..=4).map(part).collect(),
        }
    }

    fn pi_manifest(version: &str) -> BundleManifest {
        BundleManifest {
            format_version: crate::bundle::FORMAT_VERSION,
            target: crate::bundle::BundleTarget {
                board: "pi4".into(),
                arch: "arm64".into(),
                role: "worker".into(),
                image_version: version.into(),
                k0s_version: "v1.34.10+k0s.0".into(),
                edgeimg_version: "0.1.0".into(),
                boot_method: "uboot".into(),
                partitions: crate::bundle::BundlePartitions {
                    table: crate::disk::layout::TableKind::Mbr,
                    boot: "1234abcd-01".into(),
                    root_a: "1234abcd-02".into(),
                    root_b: "1234abcd-03".into(),
                    data: "1234abcd-04".into(),
                    slot_size: 1 << 20,
                },
            },
            root: crate::bundle::BundleRoot {
                size: 1 << 20,
                sha256: "00".repeat(32),
                verity_root_hash: None,
            },
            boot: Vec::new(),
        }
    }

    /// The offline checks of a bundle's manifest, each refusal with the line that names it.
    #[test]
    fn a_card_refuses_bundles_for_another_board_loader_layout_or_an_older_version() {
        let table = pi_card_table();
        let card = Card {
            what: "card.img",
            board: Some("pi4".into()),
            arch: Some("arm64".into()),
            loader: Loader::UBoot,
            table: &table,
            slot: Slot::B,
            slot_size: 1 << 20,
            running: "2",
        };
        card.accepts(&pi_manifest("3"), false).unwrap();
        let refusal =
            |m: BundleManifest, force: bool| format!("{:#}", card.accepts(&m, force).unwrap_err());
        let mut m = pi_manifest("3");
        m.target.board = "pi3".into();
        assert_eq!(
            refusal(m, false),
            "the bundle is for board pi3, card.img is pi4"
        );
        let mut m = pi_manifest("3");
        m.target.arch = "armhf".into();
        assert_eq!(
            refusal(m, false),
            "the bundle is for armhf, card.img is arm64"
        );
        // A bundle for the firmware's tryboot on a card that boots through U-Boot.
        let mut m = pi_manifest("3");
        m.target.boot_method = "rpi".into();
        assert_eq!(
            refusal(m, false),
            "the bundle boots with rpi, card.img with uboot"
        );
        let mut m = pi_manifest("3");
        m.target.partitions.data = "1234abcd-05".into();
        assert!(refusal(m, false).contains("names other partitions"));
        let mut m = pi_manifest("3");
        m.root.size = (1 << 20) + 1;
        assert!(refusal(m, false).contains("does not fit in slot b"));
        for old in ["2", "1"] {
            assert_eq!(
                refusal(pi_manifest(old), false),
                format!("v{old} is not newer than the active v2 (--force to install it anyway)")
            );
            card.accepts(&pi_manifest(old), true).unwrap();
        }
    }

    #[test]
    fn a_pi_trial_config_names_the_slot_folder_and_keeps_the_rest() {
        let config = "[all]\narm_64bit=1\nkernel=vmlinuz\nos_prefix=slot-a/\ninitramfs initrd.img followkernel\n";
        let t = config_for_slot(config, Slot::B);
        assert_eq!(
            t,
            "[all]\narm_64bit=1\nkernel=vmlinuz\nos_prefix=slot-b/\ninitramfs initrd.img followkernel\n"
        );
        assert_eq!(crate::image::slots::os_prefix_slot(&t), Some(Slot::B));
        // A config.txt without a prefix gets one.
        assert!(config_for_slot("kernel=vmlinuz", Slot::B).ends_with("\nos_prefix=slot-b/\n"));
        assert_eq!(rpi_kernel_name(config), "vmlinuz");
        assert_eq!(rpi_kernel_name("arm_64bit=1\n"), "kernel8.img");
    }

    #[test]
    fn the_system_disk_and_a_mounted_card_are_refused_as_flash_refuses_them() {
        let d = tempfile::tempdir().unwrap();
        crate::flash::device::tests::fake_root(d.path());
        let e = refusal(d.path(), "/dev/sda");
        assert!(e.contains("holds the running system"), "{e}");
        let e = refusal(d.path(), "/dev/sdc");
        assert!(e.contains("is mounted at"), "{e}");
        let e = refusal(d.path(), "/dev/sdb1");
        assert!(e.contains("is a partition of /dev/sdb"), "{e}");
        let e = refusal(d.path(), "/dev/sdd");
        assert!(e.contains("not a removable disk"), "{e}");
    }
}
