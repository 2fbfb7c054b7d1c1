//! Verified boot on x86-64: `edgeimg keys generate`, `build --secure-boot`, judged by
//! sbsigntool's `sbverify`, binutils' `objdump`, and OVMF's Secure Boot build under QEMU with
//! a variable store enrolled with the user's keys by virt-firmware's `virt-fw-vars`.
//!
//! One test, so the signed images are built once: the signed image boots to ready with Secure
//! Boot on; a changed `.cmdline` byte, another key and no signature are refused by the
//! firmware (the refused boots end at the loader's or firmware's error line, not a timeout).

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use edgeimg::progress::Silent;
use edgeimg::qemu::{self, QemuSpec};

const NODE: &str = "hostname = \"sb-1\"\n[k0s]\nrole = \"worker\"\n[time]\nntp = []\n";
const UKI: &str = "::/EFI/Linux/edgeimg-a.efi";
const LOADER: &str = "::/EFI/BOOT/BOOTX64.EFI";
/// Where OVMF's Secure Boot build and its empty variable store live (Debian `ovmf`).
const SECBOOT_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd";
const VARS_TEMPLATE: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

fn keys(dir: &Path, name: &str) -> PathBuf {
    let d = dir.join(name);
    let o = edgeimg(&["keys", "generate", d.to_str().unwrap(), "--name", name]);
    assert!(o.status.success(), "keys generate: {}", stderr(&o));
    assert!(stdout(&o).contains("db certificate: CN="), "{}", stdout(&o));
    d
}

fn build_image(dir: &Path, out: &str, extra: &[&str]) -> (PathBuf, std::process::Output) {
    let node = dir.join("node.toml");
    std::fs::write(&node, NODE).unwrap();
    let token = token_file(dir);
    let out = dir.join(out);
    let mut args = vec![
        "--board",
        "x86-64",
        "--role",
        "worker",
        "--no-xz",
        "--node",
        node.to_str().unwrap(),
        "--token-file",
        token.to_str().unwrap(),
    ];
    args.extend(extra);
    let o = build(&out, &args);
    assert!(o.status.success(), "build failed:\n{}", stderr(&o));
    (out.join("x86-64-worker.img"), o)
}

fn manifest(image: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(image.with_file_name("manifest.json")).unwrap())
        .unwrap()
}

fn esp(image: &Path) -> String {
    let m = manifest(image);
    let start = m["partitions"]["partitions"][0]["start_lba"]
        .as_u64()
        .unwrap()
        * 512;
    format!("{}@@{start}", image.display())
}

fn copy_out(image: &Path, file: &str, to: &Path) {
    let o = run_tool(
        "mcopy",
        &["-n", "-i", &esp(image), file, to.to_str().unwrap()],
    );
    assert!(o.status.success(), "mcopy {file}: {}", stderr(&o));
}

fn copy_in(image: &Path, from: &Path, file: &str) {
    let o = run_tool(
        "mcopy",
        &["-o", "-i", &esp(image), from.to_str().unwrap(), file],
    );
    assert!(o.status.success(), "mcopy {file}: {}", stderr(&o));
}

fn sbverify(cert: &Path, file: &Path) -> std::process::Output {
    run_tool(
        "sbverify",
        &["--cert", cert.to_str().unwrap(), file.to_str().unwrap()],
    )
}

/// An OVMF variable store with the user's PK, KEK and db enrolled and Secure Boot on.
fn enrolled_vars(keys: &Path, to: &Path) {
    let guid = std::fs::read_to_string(keys.join("GUID")).unwrap();
    let guid = guid.trim();
    let k = |f: &str| keys.join(f).display().to_string();
    let o = run_tool(
        "virt-fw-vars",
        &[
            "-i",
            VARS_TEMPLATE,
            "-o",
            to.to_str().unwrap(),
            "--set-pk",
            guid,
            &k("PK.crt"),
            "--add-kek",
            guid,
            &k("KEK.crt"),
            "--add-db",
            guid,
            &k("db.crt"),
            "--no-microsoft",
            "--secure-boot",
        ],
    );
    assert!(
        o.status.success(),
        "virt-fw-vars: {}{}",
        stdout(&o),
        stderr(&o)
    );
}

/// The board's VM with OVMF's Secure Boot build: SMM, secure pflash, the enrolled vars.
fn secure_spec(vars: &Path) -> QemuSpec {
    let mut spec = board_qemu("x86-64");
    spec.machine = format!("{},smm=on", spec.machine);
    spec.extra_args.extend([
        "-global".to_string(),
        "driver=cfi.pflash01,property=secure,value=on".to_string(),
    ]);
    spec.firmware = Some(edgeimg::profile::qemu::FirmwareSpec {
        code: vec![SECBOOT_CODE.into()],
        vars: vec![vars.display().to_string()],
    });
    spec
}

/// Who refuses an image under Secure Boot, and the line it prints (read from the sources).
#[derive(Clone, Copy)]
enum Refuser {
    /// OVMF's BdsDxe (MdeModulePkg BmBoot.c) when LoadImage of the boot option (systemd-boot)
    /// fails: `BdsDxe: failed to load Boot0002 "UEFI Misc Device" from ...: Access Denied`.
    Firmware,
    /// systemd-boot (src/boot/boot.c image_start) when the firmware's LoadImage refuses the
    /// UKI: `Error loading \EFI\Linux\edgeimg.efi: Access denied`.
    Loader,
}

impl Refuser {
    fn marker(self) -> &'static str {
        match self {
            Refuser::Firmware => ": Access Denied",
            Refuser::Loader => "Error loading \\EFI\\Linux\\edgeimg-a.efi: Access denied",
        }
    }
}

/// Boots `image` until the firmware or systemd-boot refuses the loader or the UKI; returns
/// the console. Fails if the kernel starts, or if the other one refused.
fn refused(image: &Path, spec: &QemuSpec, what: &str, by: Refuser) -> Vec<String> {
    let mut opts = smoke_options("worker", "sb-1");
    opts.timeout = Duration::from_secs(240);
    let t = Instant::now();
    let r = qemu::smoke_until(image, spec, &opts, by.marker(), &Silent)
        .unwrap_or_else(|e| panic!("{what}: no refusal seen: {e:#}"));
    eprintln!(
        "{what}: refused after {:.1} s: {}",
        t.elapsed().as_secs_f64(),
        r.ready_line
    );
    let console = r.console.join("\n");
    assert!(
        !r.console.iter().any(|l| l.contains("edgeimg: initramfs:")),
        "{what}: the kernel ran:\n{console}"
    );
    // systemd-boot started (the firmware trusted it) exactly when it is the one refusing.
    let loader_started = r
        .console
        .iter()
        .any(|l| l.contains("BdsDxe: starting Boot") && l.contains("UEFI Misc Device"));
    match by {
        Refuser::Firmware => {
            assert!(
                r.ready_line.contains("BdsDxe: failed to load Boot")
                    && r.ready_line.contains("UEFI Misc Device"),
                "{what}: not the firmware refusing the disk's loader: {}",
                r.ready_line
            );
            assert!(!loader_started, "{what}: systemd-boot ran:\n{console}");
        }
        Refuser::Loader => {
            assert!(
                loader_started,
                "{what}: systemd-boot did not run:\n{console}"
            );
        }
    }
    r.console
}

#[test]
fn signed_uki_boots_under_secure_boot_and_changed_or_foreign_images_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mine = keys(dir.path(), "edgeimg-test");
    let other = keys(dir.path(), "someone-else");
    let t = Instant::now();
    let (signed, o) = build_image(
        dir.path(),
        "signed",
        &["--secure-boot", mine.to_str().unwrap()],
    );
    eprintln!("signed build: {:.1} s", t.elapsed().as_secs_f64());
    assert!(
        !stderr(&o).contains("Secure Boot will not protect"),
        "{}",
        stderr(&o)
    );

    // sbverify accepts systemd-boot and the UKI with db.crt, and refuses them with another key.
    let uki = dir.path().join("uki.efi");
    let loader = dir.path().join("bootx64.efi");
    copy_out(&signed, UKI, &uki);
    copy_out(&signed, LOADER, &loader);
    for f in [&uki, &loader] {
        let ok = sbverify(&mine.join("db.crt"), f);
        assert!(
            ok.status.success(),
            "sbverify {}: {}{}",
            f.display(),
            stdout(&ok),
            stderr(&ok)
        );
        assert!(!sbverify(&other.join("db.crt"), f).status.success());
    }
    // objdump shows the UKI's sections; .cmdline holds the manifest's root hash and lockdown.
    let o = run_tool("objdump", &["-h", uki.to_str().unwrap()]);
    let sections = stdout(&o);
    for s in [".osrel", ".cmdline", ".uname", ".sbat", ".initrd", ".linux"] {
        assert!(
            sections.contains(&format!(" {s} ")),
            "{s} missing:\n{sections}"
        );
    }
    let cmdline_file = dir.path().join("cmdline");
    let o = run_tool(
        "objcopy",
        &[
            "-O",
            "binary",
            "--only-section=.cmdline",
            uki.to_str().unwrap(),
            cmdline_file.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "objcopy: {}", stderr(&o));
    let cmdline = std::fs::read_to_string(&cmdline_file).unwrap();
    let m = manifest(&signed);
    let root_hash = m["verity"]["root_hash"].as_str().unwrap();
    assert!(
        cmdline.contains(&format!("edgeimg.verity={root_hash}")),
        "{cmdline}"
    );
    assert!(cmdline.contains("lockdown=integrity"), "{cmdline}");
    // The manifest and inspect name the signer: the db certificate's subject and sha256.
    let db_sha = sha256_hex(&std::fs::read(mine.join("db.cer")).unwrap());
    check_json("manifest.schema.json", m.to_string().as_bytes());
    assert_eq!(m["uki"]["signed"], true);
    assert_eq!(m["uki"]["signer"]["sha256"], db_sha.as_str());
    assert_eq!(m["uki"]["signer"]["subject"], "CN=edgeimg-test db");
    let o = edgeimg(&["inspect", signed.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains(&format!("signed by CN=edgeimg-test db (sha256 {db_sha})")),
        "{}",
        stdout(&o)
    );
    let o = edgeimg(&["inspect", "--json", signed.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    check_json("inspect.schema.json", &o.stdout);
    let i: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(i["boot"]["uki"]["signer"]["sha256"], db_sha.as_str());
    // The ESP carries the enrollment files; loader.conf does not enroll unless asked.
    for f in ["PK", "KEK", "db"] {
        let o = run_tool(
            "mtype",
            &[
                "-i",
                &esp(&signed),
                &format!("::/loader/keys/auto/{f}.auth"),
            ],
        );
        assert!(o.status.success(), "{f}.auth missing");
    }
    let conf = stdout(&run_tool(
        "mtype",
        &["-i", &esp(&signed), "::/loader/loader.conf"],
    ));
    assert!(!conf.contains("secure-boot-enroll"), "{conf}");

    // Reproducible: the same keys sign the same plan into the same bytes.
    let t = Instant::now();
    let (again, _) = build_image(
        dir.path(),
        "again",
        &["--secure-boot", mine.to_str().unwrap()],
    );
    eprintln!("second signed build: {:.1} s", t.elapsed().as_secs_f64());
    let cmp = run_tool("cmp", &[signed.to_str().unwrap(), again.to_str().unwrap()]);
    assert!(
        cmp.status.success(),
        "two signed builds differ: {}",
        stdout(&cmp)
    );

    // Unsigned and signed with another key.
    let (unsigned, o) = build_image(dir.path(), "unsigned", &[]);
    assert!(
        stderr(&o).contains("Secure Boot will not protect"),
        "{}",
        stderr(&o)
    );
    let mu = manifest(&unsigned);
    check_json("manifest.schema.json", mu.to_string().as_bytes());
    assert_eq!(mu["uki"]["signed"], false);
    assert!(mu["uki"].get("signer").is_none(), "{}", mu["uki"]);
    let (foreign, _) = build_image(
        dir.path(),
        "foreign",
        &["--secure-boot", other.to_str().unwrap()],
    );

    // OVMF with Secure Boot on and the user's keys enrolled.
    let vars = dir.path().join("vars.fd");
    enrolled_vars(&mine, &vars);
    let spec = secure_spec(&vars);
    let mut opts = smoke_options("worker", "sb-1");
    opts.extra_console_checks = vec!["edgeimg: secureboot: enabled, setup mode off".into()];
    let t = Instant::now();
    let r = qemu::smoke(&signed, &spec, &opts, &Silent)
        .unwrap_or_else(|e| panic!("the signed image did not boot under Secure Boot: {e:#}"));
    eprintln!("signed boot to ready: {:.1} s", t.elapsed().as_secs_f64());
    assert!(r.ready_line.contains("hostname=sb-1"), "{}", r.ready_line);
    let sb_line = r
        .console
        .iter()
        .find(|l| l.contains("edgeimg: secureboot:"))
        .cloned()
        .unwrap_or_default();
    eprintln!("{sb_line}");
    // The kernel runs locked down: the initramfs's reading of securityfs, or the kernel's word.
    assert!(
        sb_line.contains("lockdown integrity")
            || r.console
                .iter()
                .any(|l| l.contains("ockdown") && l.contains("integrity")),
        "no lockdown=integrity seen:\n{}",
        r.console.join("\n")
    );

    // One byte of the UKI's .cmdline (the root hash) changed: systemd-boot is trusted, the
    // UKI is not.
    // (Next to a copy of the manifest, which says where the ESP starts.)
    std::fs::create_dir(dir.path().join("tampered")).unwrap();
    let tampered = dir.path().join("tampered").join("x86-64-worker.img");
    sparse_copy(&signed, &tampered);
    std::fs::copy(
        signed.with_file_name("manifest.json"),
        tampered.with_file_name("manifest.json"),
    )
    .unwrap();
    let mut bytes = std::fs::read(&uki).unwrap();
    let at = bytes
        .windows(root_hash.len())
        .position(|w| w == root_hash.as_bytes())
        .expect("the root hash is in the UKI");
    bytes[at] = if bytes[at] == b'0' { b'1' } else { b'0' };
    let changed = dir.path().join("changed.efi");
    std::fs::write(&changed, &bytes).unwrap();
    assert!(
        !sbverify(&mine.join("db.crt"), &changed).status.success(),
        "sbverify accepts the changed UKI"
    );
    copy_in(&tampered, &changed, UKI);
    refused(&tampered, &spec, "changed .cmdline", Refuser::Loader);

    refused(
        &foreign,
        &spec,
        "signed with another key",
        Refuser::Firmware,
    );
    refused(&unsigned, &spec, "unsigned", Refuser::Firmware);
}
