//! First boot of x86-64 images under QEMU (TCG) with OVMF: the node comes up as configured.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use edgeimg::progress::Silent;
use edgeimg::qemu::{self, SmokeOptions};

const NODE: &str = r#"
hostname = "boot-test-1"
run_cmd = ["echo run-cmd-ran", "mkdir -p /var/lib/edgeimg-test && echo kept > /var/lib/edgeimg-test/persist"]
boot_cmd = [
  "if touch /usr/.probe 2>/dev/null; then echo usr-writable=yes; else echo usr-writable=no; fi",
  "echo persist=$(cat /var/lib/edgeimg-test/persist 2>/dev/null || echo none)",
  "echo file=$(cat /etc/edgeimg-test/hello)",
]

[k0s]
role = "worker"

[time]
ntp = []

[[files]]
path = "/etc/edgeimg-test/hello"
content = "hello-from-node-config"
mode = "0600"
"#;

fn build_role(dir: &Path, role: &str, node: Option<&str>, token: bool) -> PathBuf {
    let out = dir.join(format!("out-{}", role.replace('+', "-")));
    let mut args: Vec<String> = vec![
        "--board".into(),
        "x86-64".into(),
        "--role".into(),
        role.into(),
        "--no-xz".into(),
    ];
    if let Some(text) = node {
        let p = dir.join("node.toml");
        std::fs::write(&p, text).unwrap();
        args.extend(["--node".into(), p.display().to_string()]);
    } else {
        let p = dir.join(format!("node-{}.toml", role.replace('+', "-")));
        std::fs::write(
            &p,
            format!(
                "hostname = \"n-{}\"\n[time]\nntp = []\n",
                role.replace('+', "-")
            ),
        )
        .unwrap();
        args.extend(["--node".into(), p.display().to_string()]);
    }
    if token {
        args.extend(["--token-file".into(), token_file(dir).display().to_string()]);
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = build(&out, &refs);
    assert!(o.status.success(), "build {role} failed:\n{}", stderr(&o));
    out.join(format!("x86-64-{role}.img"))
}

fn options(role: &str, hostname: &str, keep: bool) -> SmokeOptions {
    SmokeOptions {
        keep,
        ..smoke_options(role, hostname)
    }
}

fn console_has(report: &qemu::SmokeReport, needle: &str) -> bool {
    report.console.iter().any(|l| l.contains(needle))
}

/// k0s's pre-flight checks ran on the node for its role and found no error.
fn assert_sysinfo_clean(role: &str, report: &qemu::SmokeReport) {
    let s = report
        .sysinfo
        .as_ref()
        .unwrap_or_else(|| panic!("{role}: no sysinfo line:\n{}", report.console.join("\n")));
    assert_eq!(s.errors, 0, "{role}: {}", s.text);
    assert!(s.passed >= 10, "{role}: {}", s.text);
    eprintln!("{role}: {}", s.text);
}

/// The lines saying what the node waits for before it is ready.
const WAITING_HEALTHY: &str = "edgeimg: waiting: k0s started, waiting for ";

#[test]
fn worker_boots_to_ready_applies_its_config_and_survives_power_cuts() {
    let dir = tempfile::tempdir().unwrap();
    let image = build_role(dir.path(), "worker", Some(NODE), true);
    let spec = board_qemu("x86-64");

    // First boot on a copy of the image.
    let first = qemu::smoke(
        &image,
        &spec,
        &options("worker", "boot-test-1", true),
        &Silent,
    )
    .expect("first boot");
    assert_eq!(
        first.ready_line,
        format!("edgeimg: ready role=worker hostname=boot-test-1 root=ro k0s={K0S_VERSION}")
    );
    assert_sysinfo_clean("worker", &first);
    // The ready line came when kubelet's health endpoint answered, after one waiting line.
    let waiting: Vec<&String> = first
        .console
        .iter()
        .filter(|l| l.contains(WAITING_HEALTHY))
        .collect();
    assert_eq!(waiting.len(), 1, "{waiting:?}");
    assert!(waiting[0].contains("kubelet (http://127.0.0.1:10248/healthz)"));
    let at = |needle: &str| first.console.iter().position(|l| l.contains(needle));
    assert!(at(WAITING_HEALTHY) < at("edgeimg: ready "));
    assert!(console_has(&first, "usr-writable=no"), "root is writable");
    assert!(
        console_has(&first, "mounted read-only through dm-verity"),
        "the root was not opened through dm-verity"
    );
    assert!(
        console_has(&first, "file=hello-from-node-config"),
        "the node config's file is missing"
    );
    assert!(console_has(&first, "run-cmd-ran"));
    assert!(
        console_has(&first, "k0s-stand-in: worker")
            && console_has(&first, "--token-file /var/lib/k0s/join-token"),
        "k0s was not started as a worker with the token:\n{}",
        first.console.join("\n")
    );
    let disk = first.disk_copy.clone().expect("kept disk copy");
    assert!(
        !esp_has(&image, &disk, "edgeimg/token"),
        "the join token is still on the ESP after the first boot"
    );

    // Second boot of the same disk: run_cmd does not run again, data survived.
    let second = qemu::boot_disk(
        &disk,
        &spec,
        &options("worker", "boot-test-1", true),
        None,
        &Silent,
    )
    .expect("second boot");
    assert!(
        !console_has(&second, "run-cmd-ran"),
        "run_cmd ran again on the second boot"
    );
    assert!(
        console_has(&second, "persist=kept"),
        "data did not survive a reboot"
    );
    std::fs::remove_file(&disk).ok();
}

#[test]
fn power_cuts_during_the_first_boot_are_survived() {
    let dir = tempfile::tempdir().unwrap();
    let image = build_role(dir.path(), "worker", Some(NODE), true);
    let spec = board_qemu("x86-64");
    // Kill QEMU right after the data partition is made, then while the config is applied.
    for cut in ["edgeimg: data:", "edgeimg: files:"] {
        let mut opts = options("worker", "boot-test-1", true);
        opts.timeout = Duration::from_secs(300);
        let cut_boot =
            qemu::smoke_until(&image, &spec, &opts, cut, &Silent).expect("boot until the cut");
        let disk = cut_boot.disk_copy.clone().expect("kept disk copy");
        let next = qemu::boot_disk(
            &disk,
            &spec,
            &options("worker", "boot-test-1", true),
            None,
            &Silent,
        )
        .unwrap_or_else(|e| panic!("no ready line after a power cut at {cut:?}: {e:#}"));
        assert!(next.ready_line.contains("hostname=boot-test-1"));
        assert!(console_has(&next, "file=hello-from-node-config"));
        std::fs::remove_file(&disk).ok();
    }
}

#[test]
fn controller_roles_start_k0s_with_their_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let spec = board_qemu("x86-64");
    for (role, args) in [
        ("controller", "k0s-stand-in: controller"),
        ("controller+worker", "--enable-worker"),
    ] {
        let image = build_role(dir.path(), role, None, false);
        let host = format!("n-{}", role.replace('+', "-"));
        let r = qemu::smoke(&image, &spec, &options(role, &host, false), &Silent)
            .unwrap_or_else(|e| panic!("{role} did not come up: {e:#}"));
        assert!(
            console_has(&r, args),
            "{role}: k0s not started with {args}:\n{}",
            r.console.join("\n")
        );
        assert_sysinfo_clean(role, &r);
        let waits = if role == "controller" {
            "waiting for the API server (/readyz on 6443) to answer ok"
        } else {
            "waiting for the API server (/readyz on 6443) and kubelet (http://127.0.0.1:10248/healthz) to answer ok"
        };
        assert!(console_has(&r, waits), "{role}:\n{}", r.console.join("\n"));
    }

    // A single node whose k0s never becomes healthy: one waiting line, no ready line.
    let node = r#"
hostname = "n-single"
[time]
ntp = []
[[files]]
path = "/etc/k0s-stand-in/never-healthy"
content = "yes"
"#;
    let image = build_role(dir.path(), "single", Some(node), false);
    let mut opts = options("single", "n-single", false);
    opts.timeout = Duration::from_secs(600);
    let r = qemu::smoke_until(&image, &spec, &opts, STAND_IN_NEVER_HEALTHY, &Silent)
        .unwrap_or_else(|e| panic!("single (never healthy): {e:#}"));
    let console = r.console.join("\n");
    assert!(console_has(&r, "--single"), "{console}");
    assert!(!console_has(&r, "edgeimg: ready "), "{console}");
    let waiting = r
        .console
        .iter()
        .filter(|l| l.contains(WAITING_HEALTHY))
        .count();
    assert_eq!(waiting, 1, "{console}");
    let sysinfo = r.console.iter().find_map(|l| qemu::parse_sysinfo_line(l));
    assert_eq!(sysinfo.map(|s| s.errors), Some(0), "{console}");
}

/// Whether the ESP of a disk copy still holds `path`, read with mtools.
fn esp_has(image: &Path, disk: &Path, path: &str) -> bool {
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(image.with_file_name("manifest.json")).unwrap(),
    )
    .unwrap();
    let start = manifest["partitions"]["partitions"][0]["start_lba"]
        .as_u64()
        .unwrap()
        * 512;
    let spec = format!("{}@@{start}", disk.display());
    let o = run_tool("mdir", &["-i", &spec, &format!("::/{path}")]);
    o.status.success()
}

/// A copy of the project's boards/, profiles/ and overlays/ in `dir`, for a test build whose
/// profile differs.
fn data_dir_copy(dir: &Path) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let to = dir.join("data");
    std::fs::create_dir_all(&to).unwrap();
    for sub in ["boards", "profiles", "overlays"] {
        let from = root.join(sub).display().to_string();
        let o = run_tool("cp", &["-a", &from, &to.display().to_string()]);
        assert!(o.status.success(), "cp -a {from}: {}", stderr(&o));
    }
    to
}

/// An image built without a module k0s requires (xt_REDIRECT, taken out of the profile's
/// `[kubernetes] modules` in a copy of the project's data) fails `edgeimg smoke` with the
/// sysinfo error naming the kernel option and the setting that adds it.
#[test]
fn smoke_fails_on_a_sysinfo_error_naming_the_kernel_option() {
    let dir = tempfile::tempdir().unwrap();
    let data = data_dir_copy(dir.path());
    let base = data.join("profiles/base.toml");
    let text = std::fs::read_to_string(&base).unwrap();
    assert!(text.contains("\"xt_REDIRECT\", "));
    std::fs::write(&base, text.replace("\"xt_REDIRECT\", ", "")).unwrap();
    let node = dir.path().join("node.toml");
    std::fs::write(&node, "hostname = \"n-bad\"\n[time]\nntp = []\n").unwrap();
    let out = dir.path().join("out");
    let data_arg = data.display().to_string();
    let node_arg = node.display().to_string();
    let o = build(
        &out,
        &[
            "--data-dir",
            &data_arg,
            "--board",
            "x86-64",
            "--role",
            "worker",
            "--no-xz",
            "--node",
            &node_arg,
        ],
    );
    assert!(o.status.success(), "build failed:\n{}", stderr(&o));
    let image = out.join("x86-64-worker.img");
    let image_arg = image.display().to_string();
    let o = edgeimg(&[
        "--data-dir",
        &data_arg,
        "smoke",
        &image_arg,
        "--timeout",
        "420",
    ]);
    let err = stderr(&o);
    assert!(!o.status.success(), "smoke passed:\n{}", stdout(&o));
    assert!(
        err.contains("edgeimg: FAILED: sysinfo: CONFIG_NETFILTER_XT_TARGET_REDIRECT (REDIRECT target support) is a module, but this image lacks xt_REDIRECT: add \"xt_REDIRECT\" to [kubernetes] modules in profiles/base.toml"),
        "{err}"
    );
}
