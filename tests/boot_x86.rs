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
        ("single", "--single"),
    ] {
        let image = build_role(dir.path(), role, None, false);
        let host = format!("n-{}", role.replace('+', "-"));
        // The controller is a cluster's first controller (`configure --cluster`): its PKI
        // moves off the ESP into /var/lib/k0s on the first boot.
        let cluster = role == "controller";
        if cluster {
            let c = dir.path().join("boot-cluster");
            let o = edgeimg(&[
                "cluster",
                "init",
                c.to_str().unwrap(),
                "--api-address",
                "10.0.2.15",
                "--k0s-version",
                K0S_VERSION,
            ]);
            assert!(o.status.success(), "cluster init: {}", stderr(&o));
            let o = edgeimg(&[
                "configure",
                image.to_str().unwrap(),
                "--cluster",
                c.to_str().unwrap(),
                "--hostname",
                &host,
                "--role",
                "controller",
                "--no-ntp",
            ]);
            assert!(o.status.success(), "configure --cluster: {}", stderr(&o));
            assert!(esp_has(&image, &image, "edgeimg/k0s-data/pki/ca.key"));
        }
        let r = qemu::smoke(&image, &spec, &options(role, &host, cluster), &Silent)
            .unwrap_or_else(|e| panic!("{role} did not come up: {e:#}"));
        assert!(
            console_has(&r, args),
            "{role}: k0s not started with {args}:\n{}",
            r.console.join("\n")
        );
        if cluster {
            assert!(
                console_has(&r, "edgeimg: cluster files: moved 8 to /var/lib/k0s")
                    && console_has(&r, "--config /etc/k0s/k0s.yaml"),
                "the cluster's files were not moved, or k0s.yaml not used:\n{}",
                r.console.join("\n")
            );
            let disk = r.disk_copy.clone().expect("kept disk copy");
            assert!(
                !esp_has(&image, &disk, "edgeimg/k0s-data"),
                "the cluster's keys are still on the ESP after the first boot"
            );
            std::fs::remove_file(&disk).ok();
        }
    }
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
