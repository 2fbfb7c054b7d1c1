//! Kernel-direct boots (`qemu.kernel_direct`): the files named in `[qemu.direct]` read from the
//! image's boot partition (the first partition, FAT), for QEMU machines that cannot run the
//! board's own firmware (the Raspberry Pi's GPU firmware).
//!
//! With `[qemu.direct] firmware = "pi3"` the harness plays the Pi firmware's part
//! ([`crate::boot::rpi::firmware_load`]): it reads `config.txt`, or `tryboot.txt` when the
//! one-shot tryboot flag is set, applies `os_prefix` and boots the kernel, initramfs, DTB and
//! `cmdline.txt` found there. The flag lives beside the disk ([`tryboot_flag`]), as the real
//! one lives in the SoC across a reset: set when the previous boot's console shows the kernel
//! restarting with a command holding `tryboot` (`reboot '0 tryboot'`), cleared when the
//! next boot starts, whatever happens in it.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::QemuSpec;

/// Kernel-direct files extracted from a disk.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct DirectFiles {
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub dtb: Option<PathBuf>,
    pub cmdline: Option<String>,
    /// Under `firmware`: what the firmware read (`tryboot.txt, os_prefix=slot-b/`).
    pub firmware: Option<String>,
}

/// Where the Pi firmware loads a 32-bit kernel (its `kernel_address` default).
const PI_32BIT_KERNEL_ADDRESS: u32 = 0x8000;

/// The kernel's console line for a restart with a command (kernel/reboot.c).
const RESTART_WITH_COMMAND: &str = "reboot: Restarting system with command '";

/// Where the harness keeps the Pi firmware's one-shot tryboot flag for `disk`.
pub fn tryboot_flag(disk: &Path) -> PathBuf {
    let mut name = disk.as_os_str().to_owned();
    name.push(".tryboot-flag");
    PathBuf::from(name)
}

/// Whether a console asked the firmware for a trial boot: the kernel restarted with a command
/// holding the word `tryboot` (`reboot '0 tryboot'`).
pub fn asked_for_tryboot(console: &[String]) -> bool {
    console.iter().any(|l| {
        l.split_once(RESTART_WITH_COMMAND).is_some_and(|(_, cmd)| {
            cmd.split('\'')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .any(|w| w == "tryboot")
        })
    })
}

/// After a boot of a board whose firmware the harness plays: sets the tryboot flag when the
/// console asked for it.
pub(super) fn after_boot(spec: &QemuSpec, disk: &Path, console: &[String]) -> Result<()> {
    let plays_firmware =
        spec.kernel_direct && spec.direct.as_ref().is_some_and(|d| d.firmware.is_some());
    if plays_firmware && asked_for_tryboot(console) {
        let flag = tryboot_flag(disk);
        std::fs::write(&flag, b"tryboot\n")
            .with_context(|| format!("writing {}", flag.display()))?;
    }
    Ok(())
}

/// Reads the `[qemu.direct]` files from the disk's first (FAT) partition into `dir`; None
/// when the board boots through its firmware.
pub(super) fn extract_direct(
    spec: &QemuSpec,
    disk: &Path,
    dir: &Path,
) -> Result<Option<DirectFiles>> {
    if !spec.kernel_direct {
        return Ok(None);
    }
    let d = spec.direct.as_ref().context(
        "qemu.kernel_direct = true needs a [qemu.direct] table (kernel, initrd, dtb, cmdline_file)",
    )?;
    let what = disk.display().to_string();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(disk)
        .with_context(|| format!("opening {what}"))?;
    let table = crate::disk::read::read_table(&file, &what)?;
    let boot = table
        .partition(1)
        .with_context(|| format!("{what} has no partition 1 (the boot partition)"))?;
    let mut vol = crate::fs::fat::FatVolume::open(file, boot.offset())
        .with_context(|| format!("reading the boot partition of {what}"))?;
    let mut get = |name: &str| -> Result<Vec<u8>> {
        vol.read_file(name)
            .with_context(|| format!("reading {name} from the boot partition of {what}"))?
            .with_context(|| format!("{what}: the boot partition has no {name} (qemu.direct)"))
    };
    let put = |name: &str, data: Vec<u8>| -> Result<PathBuf> {
        let to = dir.join(format!("direct-{}", name.replace('/', "_")));
        std::fs::write(&to, data).with_context(|| format!("writing {}", to.display()))?;
        Ok(to)
    };
    if let Some(model) = &d.firmware {
        return play_rpi_firmware(d, model, disk, &mut vol, dir, &what).map(Some);
    }
    let kernel = put(&d.kernel, get(&d.kernel)?)?;
    let initrd = match &d.initrd {
        Some(n) => Some(put(n, get(n)?)?),
        None => None,
    };
    let dtb = match &d.dtb {
        Some(n) => Some(put(n, get(n)?)?),
        None => None,
    };
    let file_text = match &d.cmdline_file {
        Some(n) => Some(get(n)?),
        None => None,
    };
    Ok(Some(DirectFiles {
        kernel,
        initrd,
        dtb,
        cmdline: command_line(file_text.as_deref(), &d.append),
        firmware: None,
    }))
}

/// The files the Pi firmware of `model` would load from the boot partition; the one-shot
/// flag is cleared before the boot, as the firmware does.
fn play_rpi_firmware(
    d: &crate::profile::qemu::DirectSpec,
    model: &str,
    disk: &Path,
    vol: &mut crate::fs::fat::FatVolume<std::fs::File>,
    dir: &Path,
    what: &str,
) -> Result<DirectFiles> {
    if d.initrd.is_some() || d.cmdline_file.is_some() {
        anyhow::bail!(
            "[qemu.direct] firmware = {model:?}: the initramfs and cmdline.txt come from \
             config.txt; remove initrd and cmdline_file"
        );
    }
    let flag = tryboot_flag(disk);
    let tryboot = flag.exists();
    if tryboot {
        std::fs::remove_file(&flag).with_context(|| format!("removing {}", flag.display()))?;
    }
    let cache: RefCell<HashMap<String, Option<Vec<u8>>>> = RefCell::new(HashMap::new());
    let vol = RefCell::new(vol);
    let fetch = |p: &str| -> Option<Vec<u8>> {
        if let Some(v) = cache.borrow().get(p) {
            return v.clone();
        }
        let v = vol.borrow_mut().read_file(p).ok().flatten();
        cache.borrow_mut().insert(p.to_string(), v.clone());
        v
    };
    let exists = |p: &str| fetch(p).is_some();
    let read = |p: &str| fetch(p).map(|b| String::from_utf8_lossy(&b).to_string());
    let load = crate::boot::rpi::firmware_load(
        &exists,
        &read,
        tryboot,
        model,
        &d.kernel,
        d.dtb.as_deref(),
    )
    .with_context(|| what.to_string())?;
    let get = |name: &str| -> Result<Vec<u8>> {
        fetch(name).with_context(|| {
            format!(
                "{what}: the Pi firmware ({}, os_prefix={:?}) finds no {name}: the board would \
                 not boot",
                load.config, load.os_prefix
            )
        })
    };
    let put = |name: &str, data: Vec<u8>| -> Result<PathBuf> {
        let to = dir.join(format!("direct-{}", name.replace('/', "_")));
        std::fs::write(&to, data).with_context(|| format!("writing {}", to.display()))?;
        Ok(to)
    };
    let mut kernel_data = get(&load.kernel)?;
    if !load.arm_64bit {
        // The firmware starts a 32-bit kernel= at 0x8000 (U-Boot is linked there); QEMU puts
        // a raw file at 0x10000, a legacy image where its header says.
        kernel_data = crate::boot::uboot::kernel_image(
            &kernel_data,
            &load.kernel,
            crate::boot::uboot::ImageArch::Arm,
            PI_32BIT_KERNEL_ADDRESS,
        );
    }
    let kernel = put(&load.kernel, kernel_data)?;
    let initrd = match &load.initramfs {
        Some(n) => Some(put(n, get(n)?)?),
        None => None,
    };
    let dtb = match &load.dtb {
        Some(n) if d.sd_on_sdhci => {
            let tree = super::dtb::sd_on_sdhci(&get(n)?)
                .with_context(|| format!("{what}: {n} ([qemu.direct] sd_on_sdhci)"))?;
            Some(put(n, tree)?)
        }
        Some(n) => Some(put(n, get(n)?)?),
        None => None,
    };
    let text = get(&load.cmdline)?;
    Ok(DirectFiles {
        kernel,
        initrd,
        dtb,
        cmdline: command_line(Some(&text), &d.append),
        firmware: Some(format!(
            "{}{}, os_prefix={}",
            load.config,
            if tryboot { " (tryboot flag set)" } else { "" },
            load.os_prefix
        )),
    })
}

/// The kernel command line: the first line of the `cmdline_file` (when there is one), then
/// the `append` arguments.
fn command_line(file_text: Option<&[u8]>, append: &[String]) -> Option<String> {
    let mut cmdline = file_text.map(|t| {
        String::from_utf8_lossy(t)
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .to_string()
    });
    if !append.is_empty() {
        let mut c = cmdline.unwrap_or_default();
        for a in append {
            if !c.is_empty() {
                c.push(' ');
            }
            c.push_str(a);
        }
        cmdline = Some(c);
    }
    cmdline
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restart_with_tryboot_in_its_command_asks_for_a_trial() {
        let c = |l: &str| vec!["x".to_string(), l.to_string()];
        assert!(asked_for_tryboot(&c(
            "[   12.3] reboot: Restarting system with command '0 tryboot'"
        )));
        assert!(asked_for_tryboot(&c(
            "reboot: Restarting system with command 'tryboot'"
        )));
        assert!(!asked_for_tryboot(&c("reboot: Restarting system")));
        assert!(!asked_for_tryboot(&c(
            "reboot: Restarting system with command '0'"
        )));
        assert!(!asked_for_tryboot(&c("edgeimg: tryboot requested")));
        assert_eq!(
            tryboot_flag(Path::new("/t/disk.img")),
            Path::new("/t/disk.img.tryboot-flag")
        );
    }

    #[test]
    fn the_command_line_is_the_first_line_then_the_appended_arguments() {
        let append = vec!["console=ttyAMA0".to_string(), "quiet".to_string()];
        assert_eq!(
            command_line(Some(b" root=PARTLABEL=root rw \nignored\n"), &[]).as_deref(),
            Some("root=PARTLABEL=root rw")
        );
        assert_eq!(
            command_line(Some(b"root=x\n"), &append).as_deref(),
            Some("root=x console=ttyAMA0 quiet")
        );
        assert_eq!(
            command_line(None, &append).as_deref(),
            Some("console=ttyAMA0 quiet")
        );
        assert_eq!(
            command_line(Some(b""), &append).as_deref(),
            Some("console=ttyAMA0 quiet")
        );
        assert_eq!(command_line(None, &[]), None);
    }
}
