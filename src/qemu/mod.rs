//! Booting images in QEMU: `edgeimg smoke` (boot a copy, wait for the node's ready line, check
//! it) and `edgeimg run` (the same VM with the console on the user's terminal).
//!
//! Boards are data: everything board-specific is a [`QemuSpec`] in the board's TOML. The image
//! given by the user is never modified: smoke boots a sparse copy grown to the size of a real
//! card or disk, because the first boot grows the data partition to fill it.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::progress::Reporter;
use anyhow::{bail, Context, Result};

mod spec;

pub use spec::{DirectSpec, DiskInterface, FirmwareSpec, QemuSpec};

/// Kernel-direct files extracted from a disk.
struct DirectFiles {
    kernel: PathBuf,
    initrd: Option<PathBuf>,
    dtb: Option<PathBuf>,
    cmdline: Option<String>,
}

/// Reads the `[qemu.direct]` files from the disk's first (FAT) partition into `dir`.
fn extract_direct(spec: &QemuSpec, disk: &Path, dir: &Path) -> Result<Option<DirectFiles>> {
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
    let kernel = put(&d.kernel, get(&d.kernel)?)?;
    let initrd = match &d.initrd {
        Some(n) => Some(put(n, get(n)?)?),
        None => None,
    };
    let dtb = match &d.dtb {
        Some(n) => Some(put(n, get(n)?)?),
        None => None,
    };
    let mut cmdline = match &d.cmdline_file {
        Some(n) => Some(
            String::from_utf8_lossy(&get(n)?)
                .lines()
                .next()
                .unwrap_or_default()
                .trim()
                .to_string(),
        ),
        None => None,
    };
    if !d.append.is_empty() {
        let mut c = cmdline.unwrap_or_default();
        for a in &d.append {
            if !c.is_empty() {
                c.push(' ');
            }
            c.push_str(a);
        }
        cmdline = Some(c);
    }
    Ok(Some(DirectFiles {
        kernel,
        initrd,
        dtb,
        cmdline,
    }))
}

/// QEMU's SD card model wants a power-of-two size.
fn disk_size_for(spec: &QemuSpec, size: u64) -> u64 {
    if spec.disk == DiskInterface::Sd {
        size.next_power_of_two()
    } else {
        size
    }
}

/// What the ready line must say.
#[derive(Clone, Debug, PartialEq)]
pub struct Expectations {
    pub role: String,
    pub hostname: String,
    pub root_ro: bool,
    pub k0s_version: String,
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

// ---- the QEMU command line ----

/// Where the console goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Console {
    /// Serial on QEMU's stdout (read by smoke), no monitor.
    Pipe,
    /// Serial and monitor on the user's terminal (Ctrl-A X quits).
    Terminal,
}

/// Files the command line refers to.
struct VmFiles<'a> {
    disk: &'a Path,
    /// Writable copy of the firmware's vars, when the firmware has them.
    vars: Option<&'a Path>,
    /// Kernel, initrd, DTB and command line for a kernel-direct boot.
    direct: Option<&'a DirectFiles>,
}

/// Firmware files found on the host: the code image and, for split firmware, its vars template.
#[derive(Clone, Debug, PartialEq)]
struct Firmware {
    code: PathBuf,
    vars_template: Option<PathBuf>,
}

fn find_firmware(spec: &QemuSpec) -> Result<Option<Firmware>> {
    let Some(fw) = &spec.firmware else {
        return Ok(None);
    };
    for (i, code) in fw.code.iter().enumerate() {
        if !Path::new(code).is_file() {
            continue;
        }
        match fw.vars.get(i) {
            Some(vars) if Path::new(vars).is_file() => {
                return Ok(Some(Firmware {
                    code: code.into(),
                    vars_template: Some(vars.into()),
                }))
            }
            Some(_) => continue,
            None => {
                return Ok(Some(Firmware {
                    code: code.into(),
                    vars_template: None,
                }))
            }
        }
    }
    bail!(
        "no UEFI firmware for {}: none of {} exists (with its vars file {}): install {}",
        spec.machine,
        fw.code.join(", "),
        fw.vars.join(", "),
        install_hint(spec)
    )
}

fn install_hint(spec: &QemuSpec) -> String {
    if spec.packages.is_empty() {
        "QEMU for this machine".to_string()
    } else {
        format!(
            "the Debian package(s) {} (apt-get install {})",
            spec.packages.join(" "),
            spec.packages.join(" ")
        )
    }
}

/// QEMU's `-drive file=` syntax doubles commas.
fn qemu_path(p: &Path) -> String {
    p.display().to_string().replace(',', ",,")
}

fn find_in_path(binary: &str) -> Option<PathBuf> {
    if binary.contains('/') {
        return Path::new(binary).is_file().then(|| PathBuf::from(binary));
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(binary))
        .find(|p| p.is_file())
}

/// Checks the host has QEMU and the firmware before anything is copied.
fn host_check(spec: &QemuSpec) -> Result<(PathBuf, Option<Firmware>)> {
    if spec.kernel_direct && spec.direct.is_none() {
        bail!(
            "qemu.kernel_direct = true needs a [qemu.direct] table naming the kernel, initrd, dtb \
             and cmdline_file on the boot partition"
        );
    }
    let qemu = find_in_path(&spec.system).with_context(|| {
        format!(
            "{} is not installed: install {}",
            spec.system,
            install_hint(spec)
        )
    })?;
    Ok((qemu, find_firmware(spec)?))
}

fn disk_args(kind: DiskInterface, disk: &Path) -> Vec<String> {
    let drive = |iface: &str| format!("file={},format=raw,if={iface},id=d0", qemu_path(disk));
    match kind {
        DiskInterface::Virtio => vec![
            "-drive".into(),
            drive("none"),
            "-device".into(),
            "virtio-blk-pci,drive=d0".into(),
        ],
        DiskInterface::Nvme => vec![
            "-drive".into(),
            drive("none"),
            "-device".into(),
            "nvme,drive=d0,serial=edgeimg0".into(),
        ],
        DiskInterface::Ahci | DiskInterface::Sata => vec![
            "-drive".into(),
            drive("none"),
            "-device".into(),
            "ahci,id=ahci0".into(),
            "-device".into(),
            "ide-hd,drive=d0,bus=ahci0.0".into(),
        ],
        DiskInterface::Usb => vec![
            "-drive".into(),
            drive("none"),
            "-device".into(),
            "qemu-xhci,id=xhci".into(),
            "-device".into(),
            "usb-storage,bus=xhci.0,drive=d0".into(),
        ],
        DiskInterface::Sd => vec!["-drive".into(), drive("sd")],
        DiskInterface::Detached => vec![],
    }
}

fn net_args(spec: &QemuSpec, opts: &SmokeOptions) -> Vec<String> {
    if spec.net_device.is_empty() {
        return vec!["-nic".into(), "none".into()];
    }
    // restrict=on: the guest reaches nothing outside; explicit guestfwd rules still work.
    let mut netdev = "user,id=n0,restrict=on".to_string();
    for fwd in &opts.guestfwd {
        netdev.push_str(&format!(",guestfwd={fwd}"));
    }
    let mut dev = format!("{},netdev=n0", spec.net_device);
    if let Some(mac) = &opts.mac {
        dev.push_str(&format!(",mac={mac}"));
    }
    vec!["-netdev".into(), netdev, "-device".into(), dev]
}

/// The full argument list (without the binary).
fn command_args(
    spec: &QemuSpec,
    fw: Option<&Firmware>,
    files: &VmFiles,
    opts: &SmokeOptions,
    console: Console,
) -> Result<Vec<String>> {
    let mut a: Vec<String> = vec!["-M".into(), spec.machine.clone()];
    a.extend(["-accel".into(), if opts.kvm { "kvm" } else { "tcg" }.into()]);
    if let Some(cpu) = &spec.cpu {
        a.extend(["-cpu".into(), cpu.clone()]);
    }
    a.extend([
        "-m".into(),
        spec.memory_mib.to_string(),
        "-smp".into(),
        spec.smp.to_string(),
    ]);
    if let Some(fw) = fw {
        match files.vars {
            Some(vars) => a.extend([
                "-drive".into(),
                format!(
                    "if=pflash,format=raw,unit=0,readonly=on,file={}",
                    qemu_path(&fw.code)
                ),
                "-drive".into(),
                format!("if=pflash,format=raw,unit=1,file={}", qemu_path(vars)),
            ]),
            None => a.extend(["-bios".into(), fw.code.display().to_string()]),
        }
    }
    if let Some(d) = files.direct {
        a.extend(["-kernel".into(), d.kernel.display().to_string()]);
        if let Some(p) = &d.initrd {
            a.extend(["-initrd".into(), p.display().to_string()]);
        }
        if let Some(p) = &d.dtb {
            a.extend(["-dtb".into(), p.display().to_string()]);
        }
        if let Some(c) = &d.cmdline {
            a.extend(["-append".into(), c.clone()]);
        }
    }
    a.extend(disk_args(spec.disk, files.disk));
    a.extend(net_args(spec, opts));
    a.extend(["-display".into(), "none".into()]);
    match console {
        Console::Pipe => a.extend(["-monitor".into(), "none".into()]),
        Console::Terminal => {}
    }
    for _ in 0..spec.console_serial {
        a.extend(["-serial".into(), "null".into()]);
    }
    a.extend([
        "-serial".into(),
        if console == Console::Pipe {
            "stdio"
        } else {
            "mon:stdio"
        }
        .into(),
    ]);
    // A panic or reboot ends the VM instead of looping until the timeout.
    a.push("-no-reboot".into());
    a.extend(spec.extra_args.iter().cloned());
    Ok(a)
}

// ---- disks ----

/// Copies `src` to `dst` keeping holes (SEEK_DATA/SEEK_HOLE), then grows `dst` to `size`.
fn sparse_copy(src: &Path, dst: &Path, size: u64) -> Result<()> {
    use std::io::{Seek, SeekFrom};
    use std::os::unix::io::AsRawFd;
    let mut from =
        std::fs::File::open(src).with_context(|| format!("opening {}", src.display()))?;
    let len = from
        .metadata()
        .with_context(|| format!("reading {}", src.display()))?
        .len();
    let mut to =
        std::fs::File::create(dst).with_context(|| format!("creating {}", dst.display()))?;
    to.set_len(len)
        .with_context(|| format!("sizing {}", dst.display()))?;
    let fd = from.as_raw_fd();
    let mut pos: u64 = 0;
    let mut buf = vec![0u8; 1 << 20];
    while pos < len {
        // SAFETY: lseek on a file descriptor we own; no memory is touched.
        let data = unsafe { libc::lseek(fd, pos as libc::off_t, libc::SEEK_DATA) };
        if data < 0 {
            break; // no more data (ENXIO): the rest is a hole
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
        let (start, end) = (data as u64, if hole < 0 { len } else { hole as u64 });
        from.seek(SeekFrom::Start(start))?;
        to.seek(SeekFrom::Start(start))?;
        let mut left = end - start;
        while left > 0 {
            let n = buf.len().min(left as usize);
            from.read_exact(&mut buf[..n])
                .with_context(|| format!("reading {}", src.display()))?;
            to.write_all(&buf[..n])
                .with_context(|| format!("writing {}", dst.display()))?;
            left -= n as u64;
        }
        pos = end;
    }
    if size > len {
        to.set_len(size)
            .with_context(|| format!("growing {}", dst.display()))?;
    }
    to.sync_all()
        .with_context(|| format!("writing {}", dst.display()))?;
    Ok(())
}

/// A work directory for one VM: the vars copy, and the disk copy for smoke.
fn work_dir() -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix("edgeimg-qemu-")
        .tempdir()
        .context("creating a temporary directory for QEMU")
}

fn copy_vars(fw: Option<&Firmware>, dir: &Path) -> Result<Option<PathBuf>> {
    let Some(template) = fw.and_then(|f| f.vars_template.as_ref()) else {
        return Ok(None);
    };
    let to = dir.join("efivars.fd");
    std::fs::copy(template, &to).with_context(|| format!("copying {}", template.display()))?;
    Ok(Some(to))
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
    boot_copy(image, spec, opts, Stop::Ready(opts), rep)
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
    boot_copy(image, spec, opts, Stop::At(kill_when), rep)
}

fn boot_copy(
    image: &Path,
    spec: &QemuSpec,
    opts: &SmokeOptions,
    stop: Stop,
    rep: &dyn Reporter,
) -> Result<SmokeReport> {
    let (qemu, fw) = host_check(spec)?;
    let dir = work_dir()?;
    let disk = dir.path().join("disk.img");
    let image_len = std::fs::metadata(image)
        .with_context(|| format!("reading {}", image.display()))?
        .len();
    let size = disk_size_for(spec, opts.disk_size.max(image_len));
    rep.step(&format!(
        "copying {} to a {} MiB test disk",
        image.display(),
        size >> 20
    ));
    sparse_copy(image, &disk, size)?;
    let result = boot(&qemu, fw.as_ref(), spec, &disk, dir.path(), opts, stop, rep);
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
    let (qemu, fw) = host_check(spec)?;
    if !disk.is_file() {
        bail!("{} does not exist", disk.display());
    }
    let dir = work_dir()?;
    let stop = match kill_when {
        Some(m) => Stop::At(m),
        None => Stop::Ready(opts),
    };
    let r = boot(&qemu, fw.as_ref(), spec, disk, dir.path(), opts, stop, rep)
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
    let (qemu, fw) = host_check(spec)?;
    if !romfile.is_file() {
        bail!(
            "{} is missing: install ipxe-qemu (the iPXE boot ROMs for QEMU)",
            romfile.display()
        );
    }
    let dir = work_dir()?;
    let vars = copy_vars(fw.as_ref(), dir.path())?;
    let args = netboot_args(
        spec,
        fw.as_ref(),
        vars.as_deref(),
        opts,
        tftp_dir,
        bootfile,
        romfile,
        extra_disk,
    )?;
    let stop = match kill_when {
        Some(m) => Stop::At(m),
        None => Stop::Ready(opts),
    };
    rep.step(&format!(
        "starting {} -M {} from the network",
        spec.system, spec.machine
    ));
    watch(&qemu, &args, opts.timeout, stop, rep).context("booting from the network")
}

/// The command line of a network boot (see [`netboot`]).
#[allow(clippy::too_many_arguments)]
fn netboot_args(
    spec: &QemuSpec,
    fw: Option<&Firmware>,
    vars: Option<&Path>,
    opts: &SmokeOptions,
    tftp_dir: &Path,
    bootfile: &str,
    romfile: &Path,
    extra_disk: Option<&Path>,
) -> Result<Vec<String>> {
    let mut spec = spec.clone();
    spec.disk = DiskInterface::Detached;
    if let Some(d) = extra_disk {
        spec.extra_args.extend([
            "-drive".into(),
            format!("file={},format=raw,if=none,id=d1", qemu_path(d)),
            "-device".into(),
            "virtio-blk-pci,drive=d1".into(),
        ]);
    }
    let files = VmFiles {
        disk: tftp_dir,
        vars,
        direct: None,
    };
    let mut args = command_args(&spec, fw, &files, opts, Console::Pipe)?;
    for a in args.iter_mut() {
        if a.starts_with("user,id=n0") {
            a.push_str(&format!(
                ",tftp={},bootfile={bootfile}",
                qemu_path(tftp_dir)
            ));
        } else if a.starts_with(&format!("{},netdev=n0", spec.net_device)) {
            a.push_str(&format!(",romfile={}", qemu_path(romfile)));
        }
    }
    Ok(args)
}

#[allow(clippy::too_many_arguments)]
fn boot(
    qemu: &Path,
    fw: Option<&Firmware>,
    spec: &QemuSpec,
    disk: &Path,
    dir: &Path,
    opts: &SmokeOptions,
    stop: Stop,
    rep: &dyn Reporter,
) -> Result<SmokeReport> {
    let vars = copy_vars(fw, dir)?;
    let direct = extract_direct(spec, disk, dir)?;
    let files = VmFiles {
        disk,
        vars: vars.as_deref(),
        direct: direct.as_ref(),
    };
    let args = command_args(spec, fw, &files, opts, Console::Pipe)?;
    rep.step(&format!("starting {} -M {}", spec.system, spec.machine));
    watch(qemu, &args, opts.timeout, stop, rep)
}

/// The same VM as smoke with the console (and QEMU's monitor: Ctrl-A X quits) on the user's
/// terminal. Boots a grown copy unless `in_place`; returns when QEMU exits.
pub fn run(image: &Path, spec: &QemuSpec, in_place: bool, disk_size: u64, kvm: bool) -> Result<()> {
    let (qemu, fw) = host_check(spec)?;
    let dir = work_dir()?;
    let disk = if in_place {
        image.to_path_buf()
    } else {
        let d = dir.path().join("disk.img");
        let len = std::fs::metadata(image)
            .with_context(|| format!("reading {}", image.display()))?
            .len();
        sparse_copy(image, &d, disk_size_for(spec, disk_size.max(len)))?;
        d
    };
    let vars = copy_vars(fw.as_ref(), dir.path())?;
    let direct = extract_direct(spec, &disk, dir.path())?;
    let files = VmFiles {
        disk: &disk,
        vars: vars.as_deref(),
        direct: direct.as_ref(),
    };
    let opts = SmokeOptions {
        timeout: Duration::ZERO,
        keep: false,
        disk_size,
        kvm,
        expect: Expectations {
            role: String::new(),
            hostname: String::new(),
            root_ro: true,
            k0s_version: String::new(),
        },
        extra_console_checks: Vec::new(),
        mac: None,
        guestfwd: Vec::new(),
    };
    let args = command_args(spec, fw.as_ref(), &files, &opts, Console::Terminal)?;
    let status = Command::new(&qemu)
        .args(&args)
        .status()
        .with_context(|| format!("starting {}", qemu.display()))?;
    if !status.success() {
        bail!("{} exited with {status}", qemu.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::Silent;
    use std::os::unix::fs::PermissionsExt;

    fn x86() -> QemuSpec {
        toml::from_str(
            r#"
system = "qemu-system-x86_64"
machine = "q35"
memory_mib = 1024
smp = 2
disk = "virtio"
net_device = "virtio-net-pci"
extra_args = []
kernel_direct = false
packages = ["qemu-system-x86", "ovmf"]

[firmware]
code = ["/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_CODE.fd", "/usr/share/qemu/OVMF.fd"]
vars = ["/usr/share/OVMF/OVMF_VARS_4M.fd", "/usr/share/OVMF/OVMF_VARS.fd"]
"#,
        )
        .unwrap()
    }

    fn opts(timeout: u64) -> SmokeOptions {
        SmokeOptions {
            timeout: Duration::from_secs(timeout),
            keep: false,
            disk_size: 64 << 20,
            kvm: false,
            expect: Expectations {
                role: "worker".into(),
                hostname: "n1".into(),
                root_ro: true,
                k0s_version: "v1.34.10+k0s.0".into(),
            },
            extra_console_checks: vec![],
            mac: None,
            guestfwd: vec![],
        }
    }

    fn has_seq(args: &[String], seq: &[&str]) -> bool {
        args.windows(seq.len())
            .any(|w| w.iter().zip(seq).all(|(a, b)| a == b))
    }

    #[test]
    fn an_unknown_disk_in_a_board_file_names_its_line() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("boards/x86-64.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let line = 1 + text
            .lines()
            .position(|l| l.starts_with("disk = "))
            .expect("x86-64.toml has a disk line");
        let bad = text.replacen("disk = \"virtio\"", "disk = \"floppy\"", 1);
        let err = crate::profile::parse_toml::<crate::profile::Board>(&bad, &path)
            .unwrap_err()
            .to_string();
        let at = format!("{}:{line}:", path.display());
        assert!(err.starts_with(&at), "{err}");
        assert!(err.contains("floppy") && err.contains("virtio"), "{err}");
    }

    #[test]
    fn x86_command_line() {
        let spec = x86();
        let fw = Firmware {
            code: "/fw/CODE.fd".into(),
            vars_template: Some("/fw/VARS.fd".into()),
        };
        let files = VmFiles {
            disk: Path::new("/tmp/a,b/disk.img"),
            vars: Some(Path::new("/tmp/w/vars.fd")),
            direct: None,
        };
        let mut o = opts(10);
        o.guestfwd = vec!["tcp:10.0.2.100:80-tcp:127.0.0.1:8080".into()];
        o.mac = Some("52:54:00:12:34:56".into());
        let a = command_args(&spec, Some(&fw), &files, &o, Console::Pipe).unwrap();
        assert!(has_seq(&a, &["-M", "q35", "-accel", "tcg"]), "{a:?}");
        assert!(has_seq(&a, &["-m", "1024", "-smp", "2"]));
        assert!(has_seq(
            &a,
            &[
                "-drive",
                "if=pflash,format=raw,unit=0,readonly=on,file=/fw/CODE.fd"
            ]
        ));
        assert!(has_seq(
            &a,
            &["-drive", "if=pflash,format=raw,unit=1,file=/tmp/w/vars.fd"]
        ));
        assert!(
            has_seq(
                &a,
                &["-drive", "file=/tmp/a,,b/disk.img,format=raw,if=none,id=d0"]
            ),
            "{a:?}"
        );
        assert!(has_seq(&a, &["-device", "virtio-blk-pci,drive=d0"]));
        assert!(has_seq(
            &a,
            &[
                "-netdev",
                "user,id=n0,restrict=on,guestfwd=tcp:10.0.2.100:80-tcp:127.0.0.1:8080"
            ]
        ));
        assert!(has_seq(
            &a,
            &["-device", "virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56"]
        ));
        assert!(has_seq(
            &a,
            &["-monitor", "none", "-serial", "stdio", "-no-reboot"]
        ));
        o.kvm = true;
        let t = command_args(&spec, Some(&fw), &files, &o, Console::Terminal).unwrap();
        assert!(has_seq(&t, &["-accel", "kvm"]) && has_seq(&t, &["-serial", "mon:stdio"]));
        assert!(!t.contains(&"-monitor".to_string()));
    }

    #[test]
    fn other_disks_serials_and_firmware_forms() {
        let mut spec = x86();
        spec.console_serial = 1;
        spec.disk = DiskInterface::Sd;
        spec.net_device = String::new();
        spec.cpu = Some("cortex-a53".into());
        let fw = Firmware {
            code: "/fw/OVMF.fd".into(),
            vars_template: None,
        };
        let files = VmFiles {
            disk: Path::new("/d.img"),
            vars: None,
            direct: None,
        };
        let a = command_args(&spec, Some(&fw), &files, &opts(1), Console::Pipe).unwrap();
        assert!(
            has_seq(&a, &["-serial", "null", "-serial", "stdio"]),
            "{a:?}"
        );
        assert!(has_seq(
            &a,
            &["-drive", "file=/d.img,format=raw,if=sd,id=d0"]
        ));
        assert!(has_seq(&a, &["-nic", "none"]) && has_seq(&a, &["-cpu", "cortex-a53"]));
        assert!(has_seq(&a, &["-bios", "/fw/OVMF.fd"]));
        for (kind, dev) in [
            (DiskInterface::Nvme, "nvme,drive=d0,serial=edgeimg0"),
            (DiskInterface::Usb, "usb-storage,bus=xhci.0,drive=d0"),
            (DiskInterface::Ahci, "ide-hd,drive=d0,bus=ahci0.0"),
        ] {
            assert!(
                disk_args(kind, Path::new("/d")).contains(&dev.to_string()),
                "{kind:?}"
            );
        }
    }

    #[test]
    fn console_lines_lose_escapes() {
        assert_eq!(
            strip_escapes("\u{1b}[2J\u{1b}[01;01H\u{1b}[=3hBdsDxe: x\r\n"),
            "BdsDxe: x"
        );
        assert_eq!(
            strip_escapes("\u{1b}[1m\u{1b}[37m\u{1b}[40miPXE\u{1b}[0m ok"),
            "iPXE ok"
        );
    }

    #[test]
    fn ready_line_is_parsed_and_checked() {
        let line = "[   12.3] edgeimg: ready role=worker hostname=n1 root=ro k0s=v1.34.10+k0s.0\r";
        let r = parse_ready_line(line).unwrap();
        assert_eq!(
            r.text,
            "edgeimg: ready role=worker hostname=n1 root=ro k0s=v1.34.10+k0s.0"
        );
        assert_eq!(
            (
                r.role.as_str(),
                r.hostname.as_str(),
                r.root.as_str(),
                r.k0s.as_str()
            ),
            ("worker", "n1", "ro", "v1.34.10+k0s.0")
        );
        assert!(opts(1).expect.mismatches(&r).is_empty());
        let bad = parse_ready_line(
            "edgeimg: ready role=controller hostname=n1 root=rw k0s=v1.34.10+k0s.0",
        )
        .unwrap();
        let m = opts(1).expect.mismatches(&bad);
        assert_eq!(
            m,
            vec![
                "role: expected \"worker\", got \"controller\"",
                "root: expected \"ro\", got \"rw\""
            ]
        );
        assert!(parse_ready_line("edgeimg: network: dhcp").is_none());
    }

    #[test]
    fn missing_qemu_names_the_packages() {
        let mut spec = x86();
        spec.system = "qemu-system-does-not-exist".into();
        let err = host_check(&spec).unwrap_err().to_string();
        assert!(err.contains("qemu-system-x86 ovmf"), "{err}");
        let mut spec = x86();
        spec.system = "/bin/sh".into();
        spec.firmware = Some(FirmwareSpec {
            code: vec!["/nonexistent/CODE.fd".into()],
            vars: vec![],
        });
        let err = host_check(&spec).unwrap_err().to_string();
        assert!(
            err.contains("/nonexistent/CODE.fd") && err.contains("apt-get install"),
            "{err}"
        );
    }

    #[test]
    fn sparse_copy_keeps_holes_and_grows() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src.img");
        {
            let mut f = std::fs::File::create(&src).unwrap();
            f.set_len(8 << 20).unwrap();
            use std::io::{Seek, SeekFrom};
            f.seek(SeekFrom::Start(4 << 20)).unwrap();
            f.write_all(b"payload").unwrap();
            f.seek(SeekFrom::Start(0)).unwrap();
            f.write_all(b"head").unwrap();
        }
        let dst = dir.path().join("dst.img");
        sparse_copy(&src, &dst, 32 << 20).unwrap();
        let d = std::fs::read(&dst).unwrap();
        assert_eq!(d.len(), 32 << 20);
        assert_eq!(&d[..4], b"head");
        assert_eq!(&d[4 << 20..(4 << 20) + 7], b"payload");
        use std::os::unix::fs::MetadataExt;
        assert!(
            std::fs::metadata(&dst).unwrap().blocks() * 512 < 4 << 20,
            "the copy is not sparse"
        );
    }

    /// A stand-in for QEMU: a shell script that prints a console and then sleeps, so the
    /// console reading, marker handling and killing are tested without a VM.
    fn fake_qemu(dir: &Path, console: &str) -> QemuSpec {
        let script = dir.join("fake-qemu");
        std::fs::write(
            &script,
            format!("#!/bin/sh\ncat <<'EOF'\n{console}\nEOF\nexec sleep 30\n"),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        QemuSpec {
            system: script.display().to_string(),
            firmware: None,
            ..x86()
        }
    }

    #[test]
    fn an_early_kernel_panic_boots_again_but_a_late_one_fails() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("fake-qemu");
        // Panics on the first start only (a marker file remembers it), then comes up.
        let marker = dir.path().join("started-once");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\nif [ ! -e {m} ]; then : > {m}; echo '[ 2.5] Kernel panic - not syncing: Fatal exception in interrupt'; exec sleep 30; fi\n\
                 echo 'edgeimg: init: modules'\necho 'edgeimg: ready role=worker hostname=n1 root=ro k0s=v1.34.10+k0s.0'\nexec sleep 30\n",
                m = marker.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let spec = QemuSpec {
            system: script.display().to_string(),
            firmware: None,
            ..x86()
        };
        let img = image(dir.path());
        let r = smoke(&img, &spec, &opts(20), &Silent).unwrap();
        assert!(r.ready_line.contains("hostname=n1"));

        let late = fake_qemu(
            dir.path(),
            "edgeimg: init: modules\nKernel panic - not syncing: Attempted to kill init!",
        );
        let t = Instant::now();
        let err = format!("{:#}", smoke(&img, &late, &opts(20), &Silent).unwrap_err());
        assert!(err.contains("the kernel panicked: Kernel panic"), "{err}");
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "a panic did not fail fast"
        );
    }

    fn image(dir: &Path) -> PathBuf {
        let p = dir.join("in.img");
        std::fs::write(&p, vec![7u8; 4096]).unwrap();
        p
    }

    #[test]
    fn smoke_reads_the_ready_line_and_leaves_the_image_alone() {
        let dir = tempfile::tempdir().unwrap();
        let spec = fake_qemu(dir.path(), "BdsDxe: loading\nedgeimg: init: modules\nedgeimg: ready role=worker hostname=n1 root=ro k0s=v1.34.10+k0s.0\nk0s-stand-in: worker");
        let img = image(dir.path());
        let mut o = opts(20);
        o.keep = true;
        o.extra_console_checks = vec!["k0s-stand-in: worker".into()];
        let t = Instant::now();
        let r = smoke(&img, &spec, &o, &Silent).unwrap();
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "did not stop after the ready line"
        );
        assert_eq!(
            r.ready_line,
            "edgeimg: ready role=worker hostname=n1 root=ro k0s=v1.34.10+k0s.0"
        );
        assert!(r.boot_seconds > 0.0 && r.boot_seconds < 10.0);
        assert_eq!(r.console.len(), 4);
        let disk = r.disk_copy.unwrap();
        assert_eq!(std::fs::metadata(&disk).unwrap().len(), 64 << 20);
        assert_eq!(std::fs::read(&img).unwrap(), vec![7u8; 4096]);
        std::fs::remove_dir_all(disk.parent().unwrap()).unwrap();
    }

    #[test]
    fn smoke_fails_fast_on_failure_and_on_a_wrong_ready_line() {
        let dir = tempfile::tempdir().unwrap();
        let img = image(dir.path());
        let spec = fake_qemu(
            dir.path(),
            "edgeimg: data: mkfs\nedgeimg: FAILED: mkfs.ext4 /dev/vda3",
        );
        let t = Instant::now();
        let err = format!("{:#}", smoke(&img, &spec, &opts(20), &Silent).unwrap_err());
        assert!(t.elapsed() < Duration::from_secs(10), "did not fail fast");
        assert!(
            err.contains("FAILED: mkfs.ext4") && err.contains("edgeimg: data: mkfs"),
            "{err}"
        );
        let spec = fake_qemu(
            dir.path(),
            "edgeimg: ready role=worker hostname=other root=ro k0s=v1.34.10+k0s.0",
        );
        let err = format!("{:#}", smoke(&img, &spec, &opts(20), &Silent).unwrap_err());
        assert!(
            err.contains("hostname: expected \"n1\", got \"other\""),
            "{err}"
        );
        let spec = fake_qemu(
            dir.path(),
            "edgeimg: ready role=worker hostname=n1 root=ro k0s=v1.34.10+k0s.0",
        );
        let mut o = opts(8);
        o.extra_console_checks = vec!["never-printed".into()];
        let err = format!("{:#}", smoke(&img, &spec, &o, &Silent).unwrap_err());
        assert!(err.contains("never showed: never-printed"), "{err}");
    }

    #[test]
    fn power_cut_stops_at_the_marker_and_keeps_the_disk() {
        let dir = tempfile::tempdir().unwrap();
        let img = image(dir.path());
        let spec = fake_qemu(dir.path(), "edgeimg: boot: found\nedgeimg: data: growing\nedgeimg: ready role=worker hostname=n1 root=ro k0s=v1.34.10+k0s.0");
        let mut o = opts(20);
        o.keep = true;
        let r = smoke_until(&img, &spec, &o, "edgeimg: data:", &Silent).unwrap();
        assert_eq!(r.ready_line, "edgeimg: data: growing");
        assert_eq!(r.console.len(), 2, "read past the cut: {:?}", r.console);
        let disk = r.disk_copy.unwrap();
        let again = boot_disk(&disk, &spec, &o, None, &Silent).unwrap();
        assert!(again.ready_line.starts_with("edgeimg: ready"));
        assert_eq!(again.disk_copy.as_deref(), Some(disk.as_path()));
        std::fs::remove_dir_all(disk.parent().unwrap()).unwrap();
    }

    /// The `[qemu]` table of every board file, by board name.
    fn board_specs() -> Vec<(String, QemuSpec)> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("boards");
        let mut specs: Vec<(String, QemuSpec)> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .map(|p| {
                let text = std::fs::read_to_string(&p).unwrap();
                let board: toml::Table = toml::from_str(&text).unwrap();
                let spec = board["qemu"].clone().try_into().unwrap();
                let name = p.file_stem().unwrap().to_string_lossy().to_string();
                (name, spec)
            })
            .collect();
        specs.sort_by(|a, b| a.0.cmp(&b.0));
        specs
    }

    /// How a golden case boots.
    #[derive(Clone, Copy)]
    enum GoldenBoot {
        Disk,
        Network { data_disk: bool },
    }

    /// Which firmware file the host is taken to have.
    #[derive(Clone, Copy)]
    enum GoldenFirmware {
        /// The first `code` with a `vars` entry, the vars copied into the VM's directory.
        Split,
        /// The first `code` with no `vars` entry (`-bios`).
        Combined,
    }

    /// One way of booting a board, as `smoke`, `run` and `netboot` assemble it.
    struct Case {
        name: &'static str,
        console: Console,
        kvm: bool,
        /// A MAC address and a guestfwd rule.
        net_options: bool,
        firmware: GoldenFirmware,
        boot: GoldenBoot,
    }

    const CASES: &[Case] = &[
        Case {
            name: "smoke",
            console: Console::Pipe,
            kvm: false,
            net_options: false,
            firmware: GoldenFirmware::Split,
            boot: GoldenBoot::Disk,
        },
        Case {
            name: "run-kvm",
            console: Console::Terminal,
            kvm: true,
            net_options: false,
            firmware: GoldenFirmware::Split,
            boot: GoldenBoot::Disk,
        },
        Case {
            name: "smoke-mac-guestfwd",
            console: Console::Pipe,
            kvm: false,
            net_options: true,
            firmware: GoldenFirmware::Split,
            boot: GoldenBoot::Disk,
        },
        Case {
            name: "smoke-bios",
            console: Console::Pipe,
            kvm: false,
            net_options: false,
            firmware: GoldenFirmware::Combined,
            boot: GoldenBoot::Disk,
        },
        Case {
            name: "netboot",
            console: Console::Pipe,
            kvm: false,
            net_options: true,
            firmware: GoldenFirmware::Split,
            boot: GoldenBoot::Network { data_disk: false },
        },
        Case {
            name: "netboot-data-disk",
            console: Console::Pipe,
            kvm: false,
            net_options: true,
            firmware: GoldenFirmware::Split,
            boot: GoldenBoot::Network { data_disk: true },
        },
    ];

    /// The arguments of `case` for `spec`, or None when the board has no such firmware.
    fn case_args(spec: &QemuSpec, case: &Case) -> Option<Vec<String>> {
        let fw = match (&spec.firmware, case.firmware) {
            (None, _) => None,
            (Some(f), GoldenFirmware::Split) => {
                let i = (0..f.code.len()).find(|&i| i < f.vars.len())?;
                Some(Firmware {
                    code: f.code[i].clone().into(),
                    vars_template: Some(f.vars[i].clone().into()),
                })
            }
            (Some(f), GoldenFirmware::Combined) => Some(Firmware {
                code: f.code.get(f.vars.len())?.into(),
                vars_template: None,
            }),
        };
        if spec.firmware.is_none() && matches!(case.firmware, GoldenFirmware::Combined) {
            return None;
        }
        let vars = fw
            .as_ref()
            .and_then(|f| f.vars_template.as_ref())
            .map(|_| Path::new("/vm/efivars.fd"));
        let mut o = opts(1);
        o.kvm = case.kvm;
        if case.net_options {
            o.mac = Some("52:54:00:12:34:56".into());
            o.guestfwd = vec!["tcp:10.0.2.100:80-tcp:127.0.0.1:8080".into()];
        }
        let direct = spec
            .direct
            .as_ref()
            .filter(|_| spec.kernel_direct)
            .map(|d| {
                let mut cmdline = "console=serial0,115200 root=PARTLABEL=root".to_string();
                for a in &d.append {
                    cmdline.push(' ');
                    cmdline.push_str(a);
                }
                DirectFiles {
                    kernel: format!("/vm/direct-{}", d.kernel).into(),
                    initrd: d.initrd.as_ref().map(|n| format!("/vm/direct-{n}").into()),
                    dtb: d.dtb.as_ref().map(|n| format!("/vm/direct-{n}").into()),
                    cmdline: d.cmdline_file.as_ref().map(|_| cmdline),
                }
            });
        Some(match case.boot {
            GoldenBoot::Disk => {
                let files = VmFiles {
                    disk: Path::new("/vm/a,b/disk.img"),
                    vars,
                    direct: direct.as_ref(),
                };
                command_args(spec, fw.as_ref(), &files, &o, case.console).unwrap()
            }
            GoldenBoot::Network { data_disk } => netboot_args(
                spec,
                fw.as_ref(),
                vars,
                &o,
                Path::new("/srv/tftp,1"),
                "boot.ipxe",
                Path::new("/usr/lib/ipxe/qemu/efi-virtio.rom"),
                data_disk.then_some(Path::new("/vm/data.img")),
            )
            .unwrap(),
        })
    }

    /// Sets the board-file spelling `disk` on `spec`.
    fn with_disk(spec: &QemuSpec, disk: &str) -> QemuSpec {
        let mut s = spec.clone();
        s.disk = serde_json::from_value(serde_json::Value::String(disk.into())).unwrap();
        s
    }

    /// The QEMU argument vectors of every board file booted every way (and of every disk
    /// interface), against `src/qemu/testdata/args.json`. `EDGEIMG_BLESS=1` rewrites the file.
    #[test]
    fn argument_vectors_match_the_golden_file() {
        let mut got = std::collections::BTreeMap::new();
        let specs = board_specs();
        for (name, spec) in &specs {
            for case in CASES {
                if let Some(a) = case_args(spec, case) {
                    got.insert(format!("{name} {}", case.name), a);
                }
            }
        }
        let x86 = &specs.iter().find(|(n, _)| n == "x86-64").unwrap().1;
        for disk in ["virtio", "nvme", "ahci", "sata", "usb", "sd", "none"] {
            let a = case_args(&with_disk(x86, disk), &CASES[0]).unwrap();
            got.insert(format!("x86-64 disk={disk}"), a);
        }
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/qemu/testdata/args.json");
        if std::env::var_os("EDGEIMG_BLESS").is_some() {
            let lines: Vec<String> = got
                .iter()
                .map(|(k, v)| {
                    format!(
                        "  {}: {}",
                        serde_json::to_string(k).unwrap(),
                        serde_json::to_string(v).unwrap()
                    )
                })
                .collect();
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, format!("{{\n{}\n}}\n", lines.join(",\n"))).unwrap();
        }
        let want: std::collections::BTreeMap<String, Vec<String>> =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let keys: std::collections::BTreeSet<&String> = want.keys().chain(got.keys()).collect();
        let differ: Vec<String> = keys
            .into_iter()
            .filter(|k| want.get(*k) != got.get(*k))
            .map(|k| format!("{k}:\n  want {:?}\n  got  {:?}", want.get(k), got.get(k)))
            .collect();
        assert!(
            differ.is_empty(),
            "arguments differ from {} (EDGEIMG_BLESS=1 rewrites it):\n{}",
            path.display(),
            differ.join("\n")
        );
    }

    /// Real QEMU and OVMF on a blank disk: no OS, so the timeout path returns an error that
    /// carries the firmware's console lines.
    #[test]
    fn real_qemu_blank_disk_times_out_with_console_lines() {
        let spec = x86();
        if let Err(e) = host_check(&spec) {
            panic!("this test needs QEMU and OVMF: {e:#}");
        }
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("blank.img");
        std::fs::File::create(&img)
            .unwrap()
            .set_len(1 << 20)
            .unwrap();
        let t = Instant::now();
        let err = format!("{:#}", smoke(&img, &spec, &opts(20), &Silent).unwrap_err());
        assert!(t.elapsed() < Duration::from_secs(40));
        assert!(
            err.contains("timed out after 20 s") || err.contains("QEMU exited"),
            "{err}"
        );
        assert!(
            err.contains("console lines ---\n") && err.lines().count() > 3,
            "no console lines: {err}"
        );
    }
}
