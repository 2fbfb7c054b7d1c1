//! First boot of x86-64 images under QEMU (TCG) with OVMF: the node comes up as configured.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use edgeimg::progress::Silent;
use edgeimg::qemu::{self, QemuSpec, SmokeOptions};

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
    // The controller role boots in the cluster test below (a_controller_and_two_workers_...).
    {
        let (role, args) = ("controller+worker", "--enable-worker");
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
        let waits = "waiting for the API server (/readyz on 6443) and kubelet (http://127.0.0.1:10248/healthz) to answer ok";
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

/// A VDE switch (Debian's vde2) on a unix socket in a temporary folder: a network that only
/// the VMs plugged into it share. Stopped when dropped.
struct Switch {
    child: std::process::Child,
    sock: PathBuf,
}

impl Switch {
    fn start(dir: &Path) -> Switch {
        need("vde_switch");
        let sock = dir.join("switch");
        // Its console reads stdin: a pipe kept open keeps it running.
        let mut child = std::process::Command::new("vde_switch")
            .arg("-s")
            .arg(&sock)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("running vde_switch");
        let ctl = sock.join("ctl");
        let since = std::time::Instant::now();
        while !ctl.exists() {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("vde_switch exited with {status}");
            }
            assert!(
                since.elapsed() < Duration::from_secs(10),
                "vde_switch made no {}",
                ctl.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Switch { child, sock }
    }
}

impl Drop for Switch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Zero-touch cluster, issue 16's proof: one cluster folder, a controller image and one worker
/// image; `configure --cluster` personalizes one copy per node of the fleet, and the three
/// boot together (TCG, 512 MiB each) on a VDE switch with the inventory's static addresses.
/// The controller's k0s stand-in finds the PKI and the two bootstrap-token Secrets where k0s
/// reads them and listens on 6443; each worker's decodes its token, checks that its CA is
/// the ca.crt the controller serves, and joins the address in it with its token, which the
/// controller accepts against the Secret and logs with the worker's hostname. After the
/// boots, no key or token is left on any boot partition.
#[test]
fn a_controller_and_two_workers_form_a_cluster_on_a_local_network() {
    let started = std::time::Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let spec = QemuSpec {
        memory_mib: 512,
        ..board_qemu("x86-64")
    };
    let ctl_image = build_role(dir, "controller", None, false);
    let worker_image = build_role(dir, "worker", None, false);
    std::fs::write(dir.join("fleet.toml"), CLUSTER_FLEET).unwrap();
    let o = edgeimg_in(
        dir,
        &["cluster", "init", "shop1", "--k0s-version", K0S_VERSION],
    );
    assert!(o.status.success(), "cluster init: {}", stderr(&o));

    let nodes = [
        ("ctl-1", "controller", &ctl_image, "52:54:00:16:00:01"),
        ("pi-07", "worker", &worker_image, "52:54:00:16:00:07"),
        ("pi-08", "worker", &worker_image, "52:54:00:16:00:08"),
    ];
    let mut cards = Vec::new();
    for (node, _, image, _) in nodes {
        let card = dir.join(format!("{node}.img"));
        sparse_copy(image, &card);
        let o = edgeimg_in(
            dir,
            &[
                "configure",
                card.to_str().unwrap(),
                "--cluster",
                "shop1",
                "--inventory",
                "fleet.toml",
                "--node-name",
                node,
            ],
        );
        assert!(o.status.success(), "configure {node}: {}", stderr(&o));
        // Written to a 4 GiB disk (as smoke's copies): the first boot grows the data
        // partition into what the two root slots leave.
        let f = std::fs::OpenOptions::new().write(true).open(&card).unwrap();
        let len = f.metadata().unwrap().len();
        f.set_len(len.max(4 << 30)).unwrap();
        cards.push(card);
    }
    // The images the cards were made from hold no secret; the cards do.
    assert!(!esp_has(&ctl_image, &ctl_image, "edgeimg/k0s-data"));
    assert!(!esp_has(&worker_image, &worker_image, "edgeimg/token"));
    assert!(esp_has(
        &ctl_image,
        &cards[0],
        "edgeimg/k0s-data/pki/ca.key"
    ));
    assert!(esp_has(&worker_image, &cards[1], "edgeimg/token"));
    let o = edgeimg_in(dir, &["cluster", "status", "shop1", "--json"]);
    assert!(o.status.success(), "cluster status: {}", stderr(&o));
    let status: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(status["api_address"], "10.0.0.1", "{status}");
    let token_id = |node: &str| -> String {
        status["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["node"] == node)
            .and_then(|n| n["token_id"].as_str())
            .unwrap_or_else(|| panic!("no token id for {node}: {status}"))
            .to_string()
    };

    let switch = Switch::start(dir);
    let configured = std::time::Instant::now();
    let reports: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = nodes
            .iter()
            .zip(&cards)
            .map(|((node, role, _, mac), card)| {
                let mut opts = options(role, node, true);
                opts.timeout = Duration::from_secs(720);
                opts.mac = Some(mac.to_string());
                opts.switch = Some(switch.sock.clone());
                opts.extra_console_checks = if *role == "controller" {
                    ["pi-07", "pi-08"]
                        .iter()
                        .map(|w| {
                            format!(
                                "k0s-stand-in: controller: node {w} joined with bootstrap token {}",
                                token_id(w)
                            )
                        })
                        .collect()
                } else {
                    vec![format!("{STAND_IN_JOINED}10.0.0.1:6443")]
                };
                let spec = &spec;
                s.spawn(move || {
                    let r = qemu::boot_disk(card, spec, &opts, None, &Silent);
                    (node.to_string(), r)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let booted = configured.elapsed();
    drop(switch);
    let mut failed = Vec::new();
    let mut by_node = std::collections::BTreeMap::new();
    for (node, r) in reports {
        match r {
            Ok(r) => {
                by_node.insert(node, r);
            }
            Err(e) => failed.push(format!("{node}: {e:#}")),
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n\n"));

    let ctl = &by_node["ctl-1"];
    let console = ctl.console.join("\n");
    assert_eq!(
        ctl.ready_line,
        format!("edgeimg: ready role=controller hostname=ctl-1 root=ro k0s={K0S_VERSION}")
    );
    assert!(
        console_has(ctl, "network: eth0 static 10.0.0.1/24"),
        "{console}"
    );
    // The PKI (8 files) and the workers' two Secrets left the FAT for /var/lib/k0s; k0s got
    // the k0s.yaml and found everything where it reads it.
    assert!(
        console_has(ctl, "edgeimg: cluster files: moved 10 to /var/lib/k0s")
            && console_has(ctl, "--config /etc/k0s/k0s.yaml"),
        "{console}"
    );
    assert!(
        console_has(
            ctl,
            "k0s-stand-in: controller: pki complete in /var/lib/k0s/pki (8 files), 2 bootstrap token Secrets in /var/lib/k0s/manifests/edgeimg-tokens"
        ) && console_has(ctl, "k0s-stand-in: controller: API stand-in listening on :6443"),
        "{console}"
    );
    assert!(
        !console_has(ctl, "k0s-stand-in: controller: refused"),
        "{console}"
    );
    assert!(
        console_has(
            ctl,
            "waiting for the API server (/readyz on 6443) to answer ok"
        ),
        "{console}"
    );
    assert_sysinfo_clean("controller", ctl);
    for w in ["pi-07", "pi-08"] {
        let r = &by_node[w];
        let console = r.console.join("\n");
        assert_eq!(
            r.ready_line,
            format!("edgeimg: ready role=worker hostname={w} root=ro k0s={K0S_VERSION}")
        );
        let addr = if w == "pi-07" { "10.0.0.7" } else { "10.0.0.8" };
        assert!(
            console_has(r, &format!("network: eth0 static {addr}/24")),
            "{console}"
        );
        assert!(
            console_has(r, "--token-file /var/lib/k0s/join-token")
                && console_has(
                    r,
                    &format!(
                        "k0s-stand-in: worker: token for https://10.0.0.1:6443 as kubelet-bootstrap (token id {})",
                        token_id(w)
                    )
                ),
            "{console}"
        );
        eprintln!(
            "{w}: {}",
            r.console
                .iter()
                .find(|l| l.contains(STAND_IN_JOINED))
                .unwrap()
        );
    }
    // `cluster revoke` of a lost worker removes the very manifest the running controller
    // accepted that worker's token from, and deletes that Secret.
    let joined = ctl
        .console
        .iter()
        .find(|l| l.contains("k0s-stand-in: controller: node pi-08 joined"))
        .unwrap();
    let manifest = joined
        .rsplit_once('(')
        .and_then(|(_, f)| f.strip_suffix(')'))
        .unwrap_or_else(|| panic!("{joined}"));
    let o = edgeimg_in(dir, &["cluster", "revoke", "shop1", "pi-08"]);
    assert!(o.status.success(), "cluster revoke: {}", stderr(&o));
    let script = std::fs::read_to_string(dir.join("shop1/revoke/pi-08.sh")).unwrap();
    let id = token_id("pi-08");
    assert!(
        script.contains(&format!(
            "rm -f /var/lib/k0s/manifests/edgeimg-tokens/{manifest}\n"
        )) && manifest == format!("bootstrap-token-{id}.yaml")
            && script.contains(&format!(
                "k0s kubectl -n kube-system delete secret bootstrap-token-{id} "
            )),
        "{joined}\n{script}"
    );
    // No key, Secret or token is left on any boot partition.
    for ((node, _, image, _), r) in nodes.iter().zip(cards.iter()) {
        let disk = by_node[*node].disk_copy.clone().unwrap();
        assert_eq!(&disk, r);
        for path in ["edgeimg/k0s-data", "edgeimg/token"] {
            assert!(
                !esp_has(image, &disk, path),
                "{node}: {path} is still on the boot partition after the first boot"
            );
        }
    }
    eprintln!(
        "cluster test: {:.0} s in all, {:.0} s for the three boots",
        started.elapsed().as_secs_f64(),
        booted.as_secs_f64()
    );
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

/// An image built without a module k0s requires (xt_REDIRECT, taken out of the profile's
/// `[kubernetes] modules` in a copy of the project's data) fails `edgeimg smoke` with the
/// sysinfo error naming the kernel option and the setting that adds it.
#[test]
fn smoke_fails_on_a_sysinfo_error_naming_the_kernel_option() {
    let dir = tempfile::tempdir().unwrap();
    let data = data_dir_copy(dir.path(), "data");
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
        "--json",
    ]);
    let err = stderr(&o);
    assert!(!o.status.success(), "smoke passed:\n{}", stdout(&o));
    // Under --json the failure is error.schema.json's object on stdout, naming the option too.
    check_json("error.schema.json", &o.stdout);
    let e: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        e["error"]
            .as_str()
            .unwrap()
            .contains("CONFIG_NETFILTER_XT_TARGET_REDIRECT"),
        "{e}"
    );
    assert!(
        err.contains("edgeimg: FAILED: sysinfo: CONFIG_NETFILTER_XT_TARGET_REDIRECT (REDIRECT target support) is a module, but this image lacks xt_REDIRECT: add \"xt_REDIRECT\" to [kubernetes] modules in profiles/base.toml"),
        "{err}"
    );
}

/// An OCI image layout tarball (as `k0s airgap bundle-artifacts` and `docker save` write
/// them) with one uncompressed layer: `busybox` as /bin/busybox, /bin/sh and /bin/cat linking
/// to it, named `name` (`io.containerd.image.name`).
fn oci_layout_tar(busybox: &[u8], name: &str) -> Vec<u8> {
    fn entry(t: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8], mode: u32) {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_mtime(0);
        h.set_entry_type(if path.ends_with('/') {
            tar::EntryType::Directory
        } else {
            tar::EntryType::Regular
        });
        t.append_data(&mut h, path, data).unwrap();
    }
    fn link(t: &mut tar::Builder<Vec<u8>>, path: &str, to: &str) {
        let mut h = tar::Header::new_gnu();
        h.set_size(0);
        h.set_mode(0o777);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Symlink);
        t.append_link(&mut h, path, to).unwrap();
    }
    let mut layer = tar::Builder::new(Vec::new());
    entry(&mut layer, "bin/", &[], 0o755);
    entry(&mut layer, "bin/busybox", busybox, 0o755);
    link(&mut layer, "bin/sh", "busybox");
    link(&mut layer, "bin/cat", "busybox");
    entry(&mut layer, "proc/", &[], 0o755);
    entry(&mut layer, "sys/", &[], 0o755);
    entry(&mut layer, "dev/", &[], 0o755);
    let layer = layer.into_inner().unwrap();
    let layer_digest = format!("sha256:{}", sha256_hex(&layer));
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    }))
    .unwrap();
    let config_digest = format!("sha256:{}", sha256_hex(&config));
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": layer_digest,
            "size": layer.len(),
        }],
    }))
    .unwrap();
    let manifest_digest = format!("sha256:{}", sha256_hex(&manifest));
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest.len(),
            "annotations": {
                "io.containerd.image.name": name,
                "org.opencontainers.image.ref.name": name.rsplit(':').next().unwrap(),
            },
        }],
    }))
    .unwrap();
    let mut out = tar::Builder::new(Vec::new());
    entry(
        &mut out,
        "oci-layout",
        br#"{"imageLayoutVersion":"1.0.0"}"#,
        0o644,
    );
    entry(&mut out, "index.json", &index, 0o644);
    entry(&mut out, "blobs/", &[], 0o755);
    entry(&mut out, "blobs/sha256/", &[], 0o755);
    for blob in [&layer, &config, &manifest] {
        entry(
            &mut out,
            &format!("blobs/sha256/{}", sha256_hex(blob)),
            blob,
            0o644,
        );
    }
    out.into_inner().unwrap()
}

/// `path` of the root squashfs of `image` (read with unsquashfs).
fn root_file(image: &Path, dir: &Path, path: &str) -> Vec<u8> {
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(image.with_file_name("manifest.json")).unwrap(),
    )
    .unwrap();
    // The squashfs is the first data_blocks 4 KiB blocks of the root partition (the
    // dm-verity hash tree follows it).
    let v = &manifest["verity"];
    let part = v["data_partition"].as_u64().unwrap() as usize;
    let start = manifest["partitions"]["partitions"][part - 1]["start_lba"]
        .as_u64()
        .unwrap()
        * 512;
    let len = v["data_blocks"].as_u64().unwrap() * 4096;
    let sqfs = dir.join("root.sqfs");
    extract(image, start, len, &sqfs);
    let out = dir.join("root-files");
    let o = run_tool(
        "unsquashfs",
        &[
            "-q",
            "-no-xattrs",
            "-f",
            "-d",
            &out.display().to_string(),
            &sqfs.display().to_string(),
            path,
        ],
    );
    assert!(o.status.success(), "unsquashfs: {}", stderr(&o));
    std::fs::read(out.join(path)).unwrap()
}

const CTR_TEST: &str = r#"
sock=/run/containerd/containerd.sock
mkdir -p /var/lib/k0s/containerd /run/containerd
containerd --root /var/lib/k0s/containerd --state /run/containerd/state --address $sock >/var/lib/k0s/containerd.log 2>&1 &
i=0
while [ ! -S $sock ] && [ $i -lt 120 ]; do sleep 1; i=$((i + 1)); done
wget -q -O /var/lib/k0s/busybox-oci.tar http://10.0.2.100/busybox-oci.tar || echo "ctr-test: download failed"
ctr -a $sock images import --snapshotter overlayfs /var/lib/k0s/busybox-oci.tar || echo "ctr-test: import failed"
mkdir -p /sys/fs/cgroup/edgeimg-test
echo "+memory +pids" >/sys/fs/cgroup/edgeimg-test/cgroup.subtree_control
mkdir -p /sys/fs/cgroup/edgeimg-test/c1
echo 32 >/sys/fs/cgroup/edgeimg-test/c1/pids.max
# ctr's default spec mounts no cgroupfs: the container's own cgroup is bound in, read-only.
ctr -a $sock run --rm --seccomp --snapshotter overlayfs --memory-limit 67108864 --cgroup /edgeimg-test/c1 \
  --mount type=bind,src=/sys/fs/cgroup/edgeimg-test/c1,dst=/sys/fs/cgroup,options=rbind:ro \
  docker.io/edgeimg/busybox:1 c1 /bin/sh -c 'echo ctr-test-marker-from-container; echo ctr-test: memory.max=$(cat /sys/fs/cgroup/memory.max) pids.max=$(cat /sys/fs/cgroup/pids.max)'
rc=$?
# The airgap bundle of the image, where k0s's worker imports it: no download, and the
# container has its own network namespace with nothing but loopback.
b=/var/lib/k0s/images/k0s-airgap-bundle-test-linux-amd64.tar
echo "ctr-test: airgap link $(readlink $b) size $(wc -c <$b)"
ctr -a $sock -n k8s.io images import --snapshotter overlayfs $b || echo "ctr-test: airgap import failed"
echo "ctr-test: k8s.io images: $(ctr -a $sock -n k8s.io images ls -q | tr '\n' ' ')"
ctr -a $sock -n k8s.io run --rm --seccomp --snapshotter overlayfs docker.io/edgeimg/airgap:1 a1 \
  /bin/sh -c 'echo ctr-test-airgap-marker; echo "ctr-test: airgap netdevs [$(ls /sys/class/net | tr "\n" " ")]"'
echo "ctr-test: airgap run exit $?"
echo "ctr-test: done, exit $rc snapshots: $(ls /var/lib/k0s/containerd/io.containerd.snapshotter.v1.overlayfs 2>&1 | tr '\n' ' ')"
tail -n 5 /var/lib/k0s/containerd.log
"#;

/// A real container runtime on the node: Debian's containerd and runc (through the normal
/// package path: a role profile's `packages` in a copy of the project's data) import an OCI
/// image layout the test made from the image's own busybox and run it with the overlayfs
/// snapshotter under /var/lib/k0s on the data partition, seccomp, a memory and a pids limit
/// (`ctr run` has none: the container runs in a cgroup whose pids.max the script set).
#[test]
fn containerd_and_runc_run_a_container_with_limits_on_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let data = data_dir_copy(dir.path(), "data");
    let worker = data.join("profiles/worker.toml");
    let mut text = std::fs::read_to_string(&worker).unwrap();
    text.push_str("packages = [\"containerd\", \"runc\"]\n");
    std::fs::write(&worker, text).unwrap();
    let node = dir.path().join("node.toml");
    std::fs::write(
        &node,
        format!(
            "hostname = \"n-ctr\"\nboot_cmd = [\"sh /etc/edgeimg-test/ctr-test.sh\"]\n[time]\nntp = []\n\
             [[files]]\npath = \"/etc/edgeimg-test/ctr-test.sh\"\nmode = \"0700\"\ncontent = '''{CTR_TEST}'''\n"
        ),
    )
    .unwrap();
    let out = dir.path().join("out");
    let data_arg = data.display().to_string();
    let node_arg = node.display().to_string();
    let token = token_file(dir.path()).display().to_string();
    // The airgap bundle: an OCI layout like `k0s airgap bundle-artifacts` writes, of the
    // host's busybox-static (the image's own is only there after the build).
    let host_busybox = std::fs::read("/usr/bin/busybox")
        .expect("/usr/bin/busybox (Debian's busybox-static, scripts/install-deps test)");
    let airgap = oci_layout_tar(&host_busybox, "docker.io/edgeimg/airgap:1");
    let airgap_sha = sha256_hex(&airgap);
    let airgap_file = dir.path().join("k0s-airgap-bundle-test-linux-amd64.tar");
    std::fs::write(&airgap_file, &airgap).unwrap();
    let airgap_arg = airgap_file.display().to_string();
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
            "--token-file",
            &token,
            "--airgap-bundle",
            &airgap_arg,
            "--airgap-sha256",
            &airgap_sha,
        ],
    );
    assert!(o.status.success(), "build failed:\n{}", stderr(&o));
    let image = out.join("x86-64-worker.img");
    // The manifest and the SBOM name the bundle with its digest.
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
    let rec = manifest["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "k0s-airgap-bundle")
        .unwrap_or_else(|| panic!("no airgap bundle in the manifest inputs: {manifest}"));
    assert_eq!(rec["sha256"], airgap_sha.as_str(), "{rec}");
    assert_eq!(rec["source"], airgap_arg.as_str(), "{rec}");
    let sbom: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("sbom.spdx.json")).unwrap())
            .unwrap();
    let pkg = sbom["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "k0s-airgap-bundle")
        .unwrap_or_else(|| panic!("no airgap bundle in the SBOM: {sbom}"));
    assert_eq!(pkg["checksums"][0]["algorithm"], "SHA256", "{pkg}");
    assert_eq!(
        pkg["checksums"][0]["checksumValue"],
        airgap_sha.as_str(),
        "{pkg}"
    );
    let id = pkg["SPDXID"].as_str().unwrap();
    assert!(
        sbom["relationships"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| { r["relationshipType"] == "CONTAINS" && r["relatedSpdxElement"] == id }),
        "the image does not CONTAIN the bundle: {sbom}"
    );
    // In the root (under dm-verity), byte for byte, as unsquashfs reads it.
    assert!(
        root_file(
            &image,
            dir.path(),
            "usr/share/edgeimg/airgap/k0s-airgap-bundle-test-linux-amd64.tar"
        ) == airgap,
        "the root's airgap bundle differs from the one given"
    );
    let busybox = root_file(&image, dir.path(), "usr/bin/busybox");
    let bundle = oci_layout_tar(&busybox, "docker.io/edgeimg/busybox:1");
    let server = Server::start(vec![("/busybox-oci.tar".into(), bundle)]);
    let mut opts = options("worker", "n-ctr", false);
    opts.guestfwd = vec![format!("tcp:10.0.2.100:80-tcp:127.0.0.1:{}", server.port)];
    opts.timeout = Duration::from_secs(900);
    opts.extra_console_checks = vec!["ctr-test: done".into()];
    let r = qemu::smoke(&image, &board_qemu("x86-64"), &opts, &Silent)
        .unwrap_or_else(|e| panic!("containerd boot: {e:#}"));
    let console = r.console.join("\n");
    assert!(
        console_has(&r, "ctr-test-marker-from-container"),
        "{console}"
    );
    assert!(
        console_has(&r, "ctr-test: memory.max=67108864 pids.max=32"),
        "{console}"
    );
    assert!(console_has(&r, "ctr-test: done, exit 0"), "{console}");
    for l in r.console.iter().filter(|l| l.contains("airgap")) {
        eprintln!("console: {l}");
    }
    // The airgap bundle: linked (not copied) into /var/lib/k0s/images by the boot script,
    // imported into k0s's containerd namespace from there and run without any network.
    assert!(
        console_has(
            &r,
            "edgeimg: airgap: 1 bundle(s) linked into /var/lib/k0s/images"
        ),
        "{console}"
    );
    assert!(
        console_has(
            &r,
            &format!(
                "ctr-test: airgap link /usr/share/edgeimg/airgap/k0s-airgap-bundle-test-linux-amd64.tar size {}",
                airgap.len()
            )
        ),
        "{console}"
    );
    assert!(
        !console_has(&r, "ctr-test: airgap import failed"),
        "{console}"
    );
    assert!(
        console_has(&r, "docker.io/edgeimg/airgap:1"),
        "the k8s.io namespace lacks the bundle's image:\n{console}"
    );
    assert!(console_has(&r, "ctr-test-airgap-marker"), "{console}");
    assert!(
        console_has(&r, "ctr-test: airgap netdevs [lo ]"),
        "{console}"
    );
    assert!(console_has(&r, "ctr-test: airgap run exit 0"), "{console}");
    assert_sysinfo_clean("worker with containerd", &r);
}
