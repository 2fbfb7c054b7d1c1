//! Booting images in QEMU: `edgeimg smoke` (boot a copy, wait for the node's ready line, check
//! it), `edgeimg run` (the same VM with the console on the user's terminal), and the boots the
//! tests make (second boots, power cuts, network boots).
//!
//! Boards are data: everything board-specific is a [`QemuSpec`] in the board's TOML. The image
//! given by the user is never modified: smoke boots a sparse copy grown to the size of a real
//! card or disk, because the first boot grows the data partition to fill it.
//!
//! This file holds the public entry points and the types they take and return; the parts are
//! `spec` (the `[qemu]` table), `firmware` (QEMU and UEFI firmware on the host), `disk_copy`
//! (the VM's files), `direct` (kernel-direct boot files) and `args` (the command line); the
//! console watcher is still here.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::progress::Reporter;

mod args;
mod direct;
mod disk_copy;
mod firmware;
mod spec;
#[cfg(test)]
mod tests;

use args::{BootFrom, VmConfig};
use direct::extract_direct;
use disk_copy::{copy_size, sparse_copy, work_dir};
use firmware::{host_check, Host};

pub use spec::{DirectSpec, DiskInterface, FirmwareSpec, QemuSpec};

/// What the ready line must say.
#[derive(Clone, Debug, PartialEq)]
pub struct Expectations {
    pub role: String,
    pub hostname: String,
    pub root_ro: bool,
    pub k0s_version: String,
}

impl Expectations {
    /// Every field that differs, as `field: expected X, got Y`.
    pub fn mismatches(&self, r: &ReadyLine) -> Vec<String> {
        let root = if self.root_ro { "ro" } else { "rw" };
        [
            ("role", self.role.as_str(), &r.role),
            ("hostname", &self.hostname, &r.hostname),
            ("root", root, &r.root),
            ("k0s", &self.k0s_version, &r.k0s),
        ]
        .iter()
        .filter(|(_, want, got)| want != got)
        .map(|(field, want, got)| format!("{field}: expected {want:?}, got {got:?}"))
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
}

impl SmokeOptions {
    /// Where a boot with these options ends: at the first line holding `kill_when`, else at the
    /// expected ready line and the extra checks.
    fn stop<'a>(&'a self, kill_when: Option<&'a str>) -> Stop<'a> {
        match kill_when {
            Some(marker) => Stop::At(marker),
            None => Stop::Ready(self),
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
    /// The disk that was booted, when kept.
    pub disk_copy: Option<PathBuf>,
}

/// The console line a node prints once it is up.
pub const READY_MARKER: &str = "edgeimg: ready ";
/// The console line a failed boot step prints before dropping to a rescue shell.
pub const FAILED_MARKER: &str = "edgeimg: FAILED";
/// What the kernel prints when it panics.
const KERNEL_PANIC: &str = "Kernel panic - not syncing";
/// How often a boot is tried again after the emulated kernel panicked before edgeimg's
/// initramfs printed anything (TCG faults seen under load: nothing on the disk changed yet).
const EARLY_PANIC_RETRIES: u32 = 2;

/// The kernel panicked before the initramfs ran: an emulator fault, not the image's.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct EarlyPanic(String);
/// Console lines kept in error messages.
const TAIL_LINES: usize = 40;
/// After the ready line, how long to keep reading (k0s and late steps print after it).
const SETTLE: Duration = Duration::from_secs(5);

/// The fields of a ready line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadyLine {
    pub role: String,
    pub hostname: String,
    pub root: String,
    pub k0s: String,
    /// The line from `edgeimg: ready` on, without what the console printed before it.
    pub text: String,
}

/// Finds and parses `edgeimg: ready role=<r> hostname=<h> root=<ro|rw> k0s=<v>` in a console line.
pub fn parse_ready_line(line: &str) -> Option<ReadyLine> {
    let at = line.find(READY_MARKER)?;
    let text = line[at..].trim_end().to_string();
    let mut r = ReadyLine {
        role: String::new(),
        hostname: String::new(),
        root: String::new(),
        k0s: String::new(),
        text,
    };
    for tok in line[at + READY_MARKER.len()..].split_whitespace() {
        let Some((k, v)) = tok.split_once('=') else {
            continue;
        };
        match k {
            "role" => r.role = v.to_string(),
            "hostname" => r.hostname = v.to_string(),
            "root" => r.root = v.to_string(),
            "k0s" => r.k0s = v.to_string(),
            _ => {}
        }
    }
    Some(r)
}

// ---- running and watching ----

/// Kills QEMU when dropped, so no error path leaves a VM running.
struct Vm {
    child: Child,
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What ends the watch.
#[derive(Clone, Copy)]
enum Stop<'a> {
    /// Wait for the ready line (and the extra checks).
    Ready(&'a SmokeOptions),
    /// Kill QEMU as soon as a line holds this text (a power cut).
    At(&'a str),
}

/// Boots with QEMU and reads its console until `stop`, a failure, or the timeout; boots again
/// when the emulated kernel panicked before the initramfs ran.
fn watch(
    qemu: &Path,
    args: &[String],
    timeout: Duration,
    stop: Stop,
    rep: &dyn Reporter,
) -> Result<SmokeReport> {
    let mut attempt = 0;
    loop {
        match watch_once(qemu, args, timeout, stop, rep) {
            Err(e) if e.is::<EarlyPanic>() && attempt < EARLY_PANIC_RETRIES => {
                attempt += 1;
                rep.warn(&format!(
                    "the emulated kernel panicked before the initramfs ran (a QEMU fault; \
                     nothing was written): booting again ({attempt}/{EARLY_PANIC_RETRIES})"
                ));
            }
            other => return other,
        }
    }
}

/// One boot: reads the console until `stop`, a failure, or the timeout.
fn watch_once(
    qemu: &Path,
    args: &[String],
    timeout: Duration,
    stop: Stop,
    rep: &dyn Reporter,
) -> Result<SmokeReport> {
    let started = Instant::now();
    let mut child = Command::new(qemu)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", qemu.display()))?;
    let stdout = child.stdout.take().context("QEMU's stdout")?;
    let mut stderr = child.stderr.take().context("QEMU's stderr")?;
    let vm = Vm { child };
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        let mut raw = Vec::new();
        // Lines, not UTF-8: firmware prints escape sequences and odd bytes.
        while r
            .read_until(b'\n', &mut raw)
            .map(|n| n > 0)
            .unwrap_or(false)
        {
            let line = strip_escapes(&String::from_utf8_lossy(&raw));
            raw.clear();
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let err_thread = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });

    let mut console: Vec<String> = Vec::new();
    let mut found: Option<(String, f64)> = None;
    let mut settle_until: Option<Instant> = None;
    let deadline = started + timeout;
    let outcome: Result<()> = loop {
        let now = Instant::now();
        // Once ready, stop after the settle time if every extra check showed; else wait on.
        let until = match (&stop, &found, settle_until) {
            (Stop::Ready(opts), Some(_), Some(s)) if missing_checks(opts, &console).is_empty() => {
                s.min(deadline)
            }
            _ => deadline,
        };
        if now >= until {
            break match (&stop, &found) {
                (Stop::Ready(opts), Some(_)) => check_extra(opts, &console),
                _ => Err(anyhow::anyhow!("timed out after {} s", timeout.as_secs())),
            };
        }
        match rx.recv_timeout(until - now) {
            Ok(line) => {
                let secs = started.elapsed().as_secs_f64();
                console.push(line.clone());
                match &stop {
                    Stop::At(marker) if line.contains(marker) => {
                        found = Some((line.trim().to_string(), secs));
                        break Ok(());
                    }
                    _ => {}
                }
                if line.contains(FAILED_MARKER) {
                    break Err(anyhow::anyhow!(
                        "the node reported a failure: {}",
                        line.trim()
                    ));
                }
                if line.contains(KERNEL_PANIC) {
                    let early = !console.iter().any(|l| l.contains("edgeimg: "));
                    break Err(if early {
                        EarlyPanic(format!(
                            "the kernel panicked before the initramfs ran: {}",
                            line.trim()
                        ))
                        .into()
                    } else {
                        anyhow::anyhow!("the kernel panicked: {}", line.trim())
                    });
                }
                if let (Stop::Ready(opts), None) = (&stop, &found) {
                    if let Some(ready) = parse_ready_line(&line) {
                        rep.step(&format!("node ready after {secs:.1} s"));
                        let bad = opts.expect.mismatches(&ready);
                        if !bad.is_empty() {
                            break Err(anyhow::anyhow!(
                                "ready line differs ({}): {}",
                                bad.join("; "),
                                ready.text
                            ));
                        }
                        found = Some((ready.text, secs));
                        settle_until = Some(Instant::now() + SETTLE);
                    }
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                break match (&stop, &found) {
                    (Stop::Ready(opts), Some(_)) => check_extra(opts, &console),
                    _ => Err(anyhow::anyhow!("QEMU exited before the node was ready")),
                };
            }
        }
    };
    drop(vm); // kill QEMU now: a power cut when stopping at a marker
    let stderr_text = err_thread.join().unwrap_or_default();
    let fail = |e: anyhow::Error| {
        let early = e.is::<EarlyPanic>();
        let tail = console[console.len().saturating_sub(TAIL_LINES)..].join("\n");
        let mut msg = format!(
            "{e}\n--- last {} console lines ---\n{tail}",
            console.len().min(TAIL_LINES)
        );
        if !stderr_text.trim().is_empty() {
            msg.push_str(&format!("\n--- QEMU stderr ---\n{}", stderr_text.trim()));
        }
        if early {
            EarlyPanic(msg).into()
        } else {
            anyhow::anyhow!(msg)
        }
    };
    outcome.map_err(fail)?;
    let (ready_line, boot_seconds) =
        found.ok_or_else(|| fail(anyhow::anyhow!("QEMU stopped before the node was ready")))?;
    Ok(SmokeReport {
        ready_line,
        boot_seconds,
        console,
        disk_copy: None,
    })
}

/// A console line without its line ending, carriage returns and terminal escape sequences
/// (the firmware clears the screen and sets colours on the serial port).
fn strip_escapes(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => {
                if chars.peek() == Some(&'[') {
                    chars.next();
                    // CSI: parameters and intermediates up to a final byte in @..~
                    for f in chars.by_ref() {
                        if ('@'..='~').contains(&f) {
                            break;
                        }
                    }
                } else {
                    chars.next();
                }
            }
            '\r' | '\n' => {}
            c => out.push(c),
        }
    }
    out
}

fn missing_checks<'a>(opts: &'a SmokeOptions, console: &[String]) -> Vec<&'a str> {
    opts.extra_console_checks
        .iter()
        .filter(|c| !console.iter().any(|l| l.contains(c.as_str())))
        .map(String::as_str)
        .collect()
}

fn check_extra(opts: &SmokeOptions, console: &[String]) -> Result<()> {
    let missing = missing_checks(opts, console);
    if missing.is_empty() {
        Ok(())
    } else {
        bail!(
            "the node came up, but the console never showed: {}",
            missing.join(", ")
        )
    }
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
    let host = host_check(spec)?;
    if !disk.is_file() {
        bail!("{} does not exist", disk.display());
    }
    let dir = work_dir()?;
    let r = boot(
        &host,
        spec,
        disk,
        dir.path(),
        opts,
        opts.stop(kill_when),
        rep,
    )
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
    watch(&host.qemu, &args, opts.timeout, opts.stop(kill_when), rep)
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
    rep.step(&format!("starting {} -M {}", spec.system, spec.machine));
    watch(&host.qemu, &args, opts.timeout, stop, rep)
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
