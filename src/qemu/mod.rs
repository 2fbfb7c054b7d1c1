//! Booting images in QEMU: `edgeimg smoke` (boot a copy, wait for the node's ready line, check
//! it), `edgeimg run` (the same VM with the console on the user's terminal), and the boots the
//! tests make (second boots, power cuts, network boots).
//!
//! Boards are data: everything board-specific is a [`QemuSpec`] in the board's TOML. The image
//! given by the user is never modified: smoke boots a sparse copy grown to the size of a real
//! card or disk, because the first boot grows the data partition to fill it.
//!
//! This file holds the public entry points and the types they take and return; the parts are
//! `profile::qemu` (the `[qemu]` table), `firmware` (QEMU and UEFI firmware on the host), `disk_copy`
//! (the VM's files), `direct` (kernel-direct boot files), `args` (the command line),
//! `console` (reading the console) and `vm` (one QEMU process).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::progress::Reporter;

mod args;
mod console;
mod direct;
mod disk_copy;
mod dtb;
mod firmware;
#[cfg(test)]
mod tests;
mod vm;

use args::{BootFrom, VmConfig};
use console::Stop;
use direct::extract_direct;
pub use direct::{asked_for_tryboot, tryboot_flag};
use disk_copy::{copy_size, sparse_copy, work_dir};
use firmware::{host_check, Host};

pub use crate::node::contract::Hostname;
pub use crate::profile::qemu::{DirectSpec, DiskInterface, FirmwareSpec, QemuSpec};
pub use console::{
    parse_ready_line, parse_sysinfo_line, ReadyLine, SysinfoLine, FAILED_MARKER, READY_MARKER,
    SYSINFO_MARKER,
};

/// What the ready line must say.
#[derive(Clone, Debug, PartialEq)]
pub struct Expectations {
    pub role: String,
    pub hostname: Hostname,
    pub root_ro: bool,
    pub k0s_version: String,
}

impl Expectations {
    /// Every field that differs, as `field: expected X, got Y`.
    pub fn mismatches(&self, r: &ReadyLine) -> Vec<String> {
        let root = if self.root_ro { "ro" } else { "rw" };
        let differs = |field: &str, want: &str, got: &str| {
            (want != got).then(|| format!("{field}: expected {want:?}, got {got:?}"))
        };
        [
            differs("role", &self.role, &r.role),
            (!self.hostname.accepts(&r.hostname))
                .then(|| format!("hostname: expected {}, got {:?}", self.hostname, r.hostname)),
            differs("root", root, &r.root),
            differs("k0s", &self.k0s_version, &r.k0s),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

#[derive(Clone, Debug)]
pub struct SmokeOptions {
    /// From QEMU's start to the ready line.
    pub timeout: Duration,
    /// Keep the disk copy (its path is in the report) instead of deleting it.
    pub keep: bool,
    /// Size of the disk copy in bytes (at least the image's size).
    pub disk_size: u64,
    /// `-accel kvm` instead of TCG.
    pub kvm: bool,
    pub expect: Expectations,
    /// Substrings that must also appear on the console (waited for after the ready line).
    pub extra_console_checks: Vec<String>,
    /// MAC address of the network card.
    pub mac: Option<String>,
    /// QEMU `guestfwd=` rules (`tcp:10.0.2.100:80-tcp:127.0.0.1:8080`).
    pub guestfwd: Vec<String>,
    /// A VDE switch's socket directory (`vde_switch -s DIR`): the network card is plugged
    /// into that local-only network instead of QEMU's user-mode network (`guestfwd` then
    /// has nothing to forward through and must be empty). Give each VM its own `mac`.
    pub switch: Option<PathBuf>,
}

impl SmokeOptions {
    /// Where a boot with these options ends: at the first line holding `kill_when`, else at the
    /// expected ready line and the extra checks.
    fn stop<'a>(&'a self, kill_when: Option<&'a str>) -> Stop<'a> {
        match kill_when {
            Some(marker) => Stop::At(marker),
            None => Stop::Ready {
                expect: &self.expect,
                checks: &self.extra_console_checks,
            },
        }
    }
}

#[derive(Clone, Debug)]
pub struct SmokeReport {
    /// The ready line as printed (`edgeimg: ready role=... k0s=...`); for a boot stopped at a
    /// `kill_when` marker, the line that held the marker.
    pub ready_line: String,
    /// Seconds from QEMU's start to that line.
    pub boot_seconds: f64,
    /// Every console line, in order.
    pub console: Vec<String>,
    /// k0s's pre-flight checks as the node ran them (the last such line on the console).
    pub sysinfo: Option<SysinfoLine>,
    /// The disk that was booted, when kept.
    pub disk_copy: Option<PathBuf>,
}

/// Boots a sparse copy of `image` grown to `opts.disk_size`, waits for the ready line and
/// checks it against `opts.expect`. The image itself is never written.
pub fn smoke(
    image: &Path,
    spec: &QemuSpec,
    opts: &SmokeOptions,
    rep: &dyn Reporter,
) -> Result<SmokeReport> {
    boot_copy(image, spec, opts, opts.stop(None), rep)
}

/// Boots a copy of `image` and kills QEMU the moment a console line contains `kill_when`
/// (a power cut). The copy is kept when `opts.keep` (its path is in the report).
pub fn smoke_until(
    image: &Path,
    spec: &QemuSpec,
    opts: &SmokeOptions,
    kill_when: &str,
    rep: &dyn Reporter,
) -> Result<SmokeReport> {
    boot_copy(image, spec, opts, opts.stop(Some(kill_when)), rep)
}

fn boot_copy(
    image: &Path,
    spec: &QemuSpec,
    opts: &SmokeOptions,
    stop: Stop,
    rep: &dyn Reporter,
) -> Result<SmokeReport> {
    let host = host_check(spec)?;
    let dir = work_dir()?;
    let disk = dir.path().join("disk.img");
    let size = copy_size(image, spec.disk, opts.disk_size)?;
    rep.step(&format!(
        "copying {} to a {} MiB test disk",
        image.display(),
        size >> 20
    ));
    sparse_copy(image, &disk, size)?;
    let result = boot(&host, spec, &disk, dir.path(), opts, stop, rep);
    if opts.keep {
        let kept = dir.keep();
        let disk = kept.join("disk.img");
        return result
            .map(|r| SmokeReport {
                disk_copy: Some(disk.clone()),
                ..r
            })
            .with_context(|| {
                format!(
                    "booting {} (disk copy kept at {})",
                    image.display(),
                    disk.display()
                )
            });
    }
    result.with_context(|| format!("booting {}", image.display()))
}

/// Boots an existing disk file in place (second boots, boots after a power cut). With
/// `kill_when`, QEMU is killed as soon as a console line contains it.
pub fn boot_disk(
    disk: &Path,
    spec: &QemuSpec,
    opts: &SmokeOptions,
    kill_when: Option<&str>,
    rep: &dyn Reporter,
) -> Result<SmokeReport> {
    boot_disk_to(disk, spec, opts, opts.stop(kill_when), rep)
}

/// Boots an existing disk file in place and reads its console until QEMU exits by itself
/// (the VM is never started again: `-no-reboot`), or `opts.timeout`. What a watchdog does to
/// a node that hangs is seen this way: the guest is reset, so QEMU ends. The report's line is
/// the console's last.
pub fn boot_disk_until_exit(
    disk: &Path,
    spec: &QemuSpec,
    opts: &SmokeOptions,
    rep: &dyn Reporter,
) -> Result<SmokeReport> {
    boot_disk_to(disk, spec, opts, Stop::Exit, rep)
}

fn boot_disk_to(
    disk: &Path,
    spec: &QemuSpec,
    opts: &SmokeOptions,
    stop: Stop,
    rep: &dyn Reporter,
) -> Result<SmokeReport> {
    let host = host_check(spec)?;
    if !disk.is_file() {
        bail!("{} does not exist", disk.display());
    }
    let dir = work_dir()?;
    let r = boot(&host, spec, disk, dir.path(), opts, stop, rep)
        .with_context(|| format!("booting {}", disk.display()))?;
    Ok(SmokeReport {
        disk_copy: Some(disk.to_path_buf()),
        ..r
    })
}

/// Network boot: no boot disk; the firmware boots the network card, whose option ROM
/// (`romfile`, an iPXE EFI ROM) gets `bootfile` from QEMU's user-mode TFTP in `tftp_dir`. HTTP
/// reaches the host through `opts.guestfwd`. `extra_disk` is attached blank (virtio) as a
/// data disk. With `kill_when`, QEMU is killed as soon as a console line contains it.
#[allow(clippy::too_many_arguments)]
pub fn netboot(
    spec: &QemuSpec,
    opts: &SmokeOptions,
    tftp_dir: &Path,
    bootfile: &str,
    romfile: &Path,
    extra_disk: Option<&Path>,
    kill_when: Option<&str>,
    rep: &dyn Reporter,
) -> Result<SmokeReport> {
    let host = host_check(spec)?;
    if !romfile.is_file() {
        bail!(
            "{} is missing: install ipxe-qemu (the iPXE boot ROMs for QEMU)",
            romfile.display()
        );
    }
    let dir = work_dir()?;
    let firmware = host.vm_firmware(dir.path())?;
    let from = BootFrom::Network {
        tftp_dir,
        bootfile,
        romfile,
        data_disk: extra_disk,
    };
    let args = VmConfig::piped(spec, firmware.as_ref(), from, opts).args();
    rep.step(&format!(
        "starting {} -M {} from the network",
        spec.system, spec.machine
    ));
    vm::watch(&host.qemu, &args, opts.timeout, opts.stop(kill_when), rep)
        .context("booting from the network")
}

/// Boots `disk` with the VM's files in `dir`.
fn boot(
    host: &Host,
    spec: &QemuSpec,
    disk: &Path,
    dir: &Path,
    opts: &SmokeOptions,
    stop: Stop,
    rep: &dyn Reporter,
) -> Result<SmokeReport> {
    let firmware = host.vm_firmware(dir)?;
    let direct = extract_direct(spec, disk, dir)?;
    let from = BootFrom::Disk {
        path: disk,
        direct: direct.as_ref(),
    };
    let args = VmConfig::piped(spec, firmware.as_ref(), from, opts).args();
    if let Some(f) = direct.as_ref().and_then(|d| d.firmware.as_ref()) {
        rep.step(&format!("Pi firmware (played by the harness): {f}"));
    }
    rep.step(&format!("starting {} -M {}", spec.system, spec.machine));
    let r = vm::watch(&host.qemu, &args, opts.timeout, stop, rep)?;
    direct::after_boot(spec, disk, &r.console)?;
    Ok(r)
}

/// The same VM as smoke with the console (and QEMU's monitor: Ctrl-A X quits) on the user's
/// terminal. Boots a grown copy unless `in_place`; returns when QEMU exits.
pub fn run(image: &Path, spec: &QemuSpec, in_place: bool, disk_size: u64, kvm: bool) -> Result<()> {
    let host = host_check(spec)?;
    let dir = work_dir()?;
    let disk = if in_place {
        image.to_path_buf()
    } else {
        let d = dir.path().join("disk.img");
        sparse_copy(image, &d, copy_size(image, spec.disk, disk_size)?)?;
        d
    };
    let firmware = host.vm_firmware(dir.path())?;
    let direct = extract_direct(spec, &disk, dir.path())?;
    let from = BootFrom::Disk {
        path: &disk,
        direct: direct.as_ref(),
    };
    let args = VmConfig::on_terminal(spec, firmware.as_ref(), from, kvm).args();
    let status = Command::new(&host.qemu)
        .args(&args)
        .status()
        .with_context(|| format!("starting {}", host.qemu.display()))?;
    if !status.success() {
        bail!("{} exited with {status}", host.qemu.display());
    }
    Ok(())
}
