//! Tests of the entry points with a stand-in for QEMU (a shell script printing a console),
//! and the helpers the other files' tests share: the x86-64 spec and smoke options.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::*;
use crate::progress::Silent;

/// A `[qemu]` table like the x86-64 board's (with two CPUs).
pub(super) fn x86() -> QemuSpec {
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

/// Smoke options expecting worker `n1` with a read-only root, with `timeout` seconds.
pub(super) fn opts(timeout: u64) -> SmokeOptions {
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
        switch: None,
    }
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
             echo 'edgeimg: init: modules'\necho 'edgeimg: sysinfo: 3 passed, 0 warnings, 0 errors'\necho 'edgeimg: ready role=worker hostname=n1 root=ro k0s=v1.34.10+k0s.0'\nexec sleep 30\n",
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
    let spec = fake_qemu(dir.path(), "BdsDxe: loading\nedgeimg: init: modules\nedgeimg: sysinfo: 3 passed, 0 warnings, 0 errors\nedgeimg: ready role=worker hostname=n1 root=ro k0s=v1.34.10+k0s.0\nk0s-stand-in: worker");
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
    assert_eq!(r.console.len(), 5);
    assert_eq!(
        r.sysinfo.as_ref().map(|s| (s.passed, s.warnings, s.errors)),
        Some((3, 0, 0))
    );
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
        "edgeimg: sysinfo: 3 passed, 0 warnings, 0 errors\nedgeimg: ready role=worker hostname=other root=ro k0s=v1.34.10+k0s.0",
    );
    let err = format!("{:#}", smoke(&img, &spec, &opts(20), &Silent).unwrap_err());
    assert!(
        err.contains("hostname: expected \"n1\", got \"other\""),
        "{err}"
    );
    let spec = fake_qemu(
        dir.path(),
        "edgeimg: sysinfo: 3 passed, 0 warnings, 0 errors\nedgeimg: ready role=worker hostname=n1 root=ro k0s=v1.34.10+k0s.0",
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
    let spec = fake_qemu(dir.path(), "edgeimg: boot: found\nedgeimg: data: growing\nedgeimg: sysinfo: 3 passed, 0 warnings, 0 errors\nedgeimg: ready role=worker hostname=n1 root=ro k0s=v1.34.10+k0s.0");
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

#[test]
fn netboot_hands_qemu_a_network_boot_and_needs_the_rom() {
    let dir = tempfile::tempdir().unwrap();
    let spec = fake_qemu(dir.path(), "unused");
    std::fs::write(
        &spec.system,
        "#!/bin/sh\necho \"args: $*\"\necho 'edgeimg: sysinfo: 3 passed, 0 warnings, 0 errors'\necho 'edgeimg: ready role=worker hostname=n1 root=ro k0s=v1.34.10+k0s.0'\nexec sleep 30\n",
    )
    .unwrap();
    let (tftp, rom, data) = (
        dir.path().join("tftp"),
        dir.path().join("efi-virtio.rom"),
        dir.path().join("data.img"),
    );
    let err = netboot(
        &spec,
        &opts(20),
        &tftp,
        "boot.ipxe",
        &rom,
        None,
        None,
        &Silent,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("install ipxe-qemu"), "{err}");
    std::fs::write(&rom, b"rom").unwrap();
    let r = netboot(
        &spec,
        &opts(20),
        &tftp,
        "boot.ipxe",
        &rom,
        Some(&data),
        None,
        &Silent,
    )
    .unwrap();
    let args = &r.console[0];
    assert!(
        args.contains(&format!("tftp={},bootfile=boot.ipxe", tftp.display()))
            && args.contains(&format!("netdev=n0,romfile={}", rom.display()))
            && args.contains(&format!("file={},format=raw,if=none,id=d1", data.display()))
            && !args.contains("id=d0"),
        "{args}"
    );
    assert!(r.ready_line.starts_with("edgeimg: ready"));
}
