//! Issue 6: network boot files (`build --format all`), `edgeimg serve`, an x86-64 netboot
//! through QEMU's TFTP + the iPXE ROM + HTTP from `serve` to the ready line, a wrong root
//! digest stopping the boot, and the raw image booted as a USB stick.
//!
//! One build (`--format all --no-xz`) feeds every test here (built once per test binary).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use common::*;
use edgeimg::progress::Silent;
use edgeimg::qemu::{self, SmokeOptions};

const MAC: &str = "52:54:00:ab:cd:01";
const ROM: &str = "/usr/lib/ipxe/qemu/efi-virtio.rom";

const NODE: &str = r#"
hostname = "pxe-node-1"
boot_cmd = ["echo boot-cmd-ran=$(cat /etc/pxe-test)"]

[k0s]
role = "worker"
token_file = "join.token"

[time]
ntp = []

[storage]
device = "/dev/vda"

[[files]]
path = "/etc/pxe-test"
content = "from-the-network"
"#;

struct Built {
    _dir: tempfile::TempDir,
    out: PathBuf,
}

fn built() -> &'static Built {
    static B: OnceLock<Built> = OnceLock::new();
    B.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let token = token_file(dir.path());
        let out = build_with_node(
            dir.path(),
            NODE,
            &[
                "--board",
                "x86-64",
                "--role",
                "worker",
                "--token-file",
                token.to_str().unwrap(),
                "--format",
                "all",
                "--no-xz",
                "--base-url",
                "http://10.0.2.100:8080/",
            ],
        );
        Built { _dir: dir, out }
    })
}

fn pxe_dir() -> PathBuf {
    built().out.join("pxe")
}

/// `edgeimg serve --qemu-guestfwd`'s server in this process, with its access log.
struct Served {
    port: u16,
    log: Arc<Mutex<Vec<String>>>,
}

fn serve(dir: &Path) -> Served {
    // QEMU's guestfwd carries every guest connection over one host connection: keep it.
    let server = edgeimg::serve::Server::bind(dir, "127.0.0.1:0")
        .unwrap()
        .with_limits(edgeimg::serve::Limits::qemu_guestfwd());
    let port = server.local_addr().unwrap().port();
    let log = Arc::new(Mutex::new(Vec::new()));
    let l = log.clone();
    std::thread::spawn(move || {
        server.run(Arc::new(move |r: &edgeimg::serve::AccessRecord| {
            l.lock().unwrap().push(r.to_string());
        }))
    });
    Served { port, log }
}

/// One HTTP/1.1 request; returns (status, headers, body).
fn get(port: u16, method: &str, path: &str, extra: &str) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\n{extra}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    // The server keeps the connection (guestfwd setting) until the client closes it: read by
    // Content-Length.
    let mut buf = [0u8; 65536];
    let (head_end, len) = loop {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "connection closed before the head");
        raw.extend_from_slice(&buf[..n]);
        if let Some(p) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..p]).to_string();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .unwrap()
                .parse()
                .unwrap();
            break (p + 4, len);
        }
    };
    let want = if method == "HEAD" { 0 } else { len };
    while raw.len() < head_end + want {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "connection closed early");
        raw.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&raw[..head_end]).to_string();
    let status = head[9..12].parse().unwrap();
    (status, head, raw[head_end..head_end + want].to_vec())
}

#[test]
fn pxe_files_are_complete_and_consistent() {
    let dir = pxe_dir();
    // sha256sum (not edgeimg) judges the checksums of every listed file.
    need("sha256sum");
    let o = std::process::Command::new("sha256sum")
        .args(["--strict", "-c", "SHA256SUMS"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stdout(&o));
    assert_published_modes(&dir);
    let sums = std::fs::read_to_string(dir.join("SHA256SUMS")).unwrap();
    for f in [
        "vmlinuz",
        "initrd.img",
        "rootfs.squashfs",
        "boot.ipxe",
        "manifest.json",
        "node/default/node.env",
        "node/default/token",
        "node/default/index",
        "dnsmasq-edgeimg.conf",
        "sbom.spdx.json",
    ] {
        assert!(
            sums.lines().any(|l| l.ends_with(&format!("  {f}"))),
            "{f} not in SHA256SUMS"
        );
    }
    // The network boot set has its SBOM too, describing the root the nodes fetch.
    let sbom = dir.join("sbom.spdx.json");
    let v = run_tool("pyspdxtools", &["-i", sbom.to_str().unwrap()]);
    assert!(
        v.status.success(),
        "pyspdxtools: {}{}",
        stdout(&v),
        stderr(&v)
    );
    let d: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&sbom).unwrap()).unwrap();
    let described = d["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "rootfs.squashfs")
        .expect("the root package");
    let root_sum = run_tool(
        "sha256sum",
        &[dir.join("rootfs.squashfs").to_str().unwrap()],
    );
    assert_eq!(
        described["checksums"][0]["checksumValue"].as_str().unwrap(),
        stdout(&root_sum).split_whitespace().next().unwrap()
    );

    // The root is a squashfs unsquashfs reads, and the one in the image's root partition.
    let o = run_tool(
        "unsquashfs",
        &["-s", dir.join("rootfs.squashfs").to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let root_sha = edgeimg::disk::checksums::sha256_file(&dir.join("rootfs.squashfs")).unwrap();

    // boot.ipxe: an iPXE script naming the files under --base-url (its trailing / dropped),
    // with the root's digest and the per-MAC config folder.
    let ipxe = std::fs::read_to_string(dir.join("boot.ipxe")).unwrap();
    assert!(ipxe.starts_with("#!ipxe\n"));
    let kernel = ipxe.lines().find(|l| l.starts_with("kernel ")).unwrap();
    assert!(kernel.starts_with("kernel http://10.0.2.100:8080/vmlinuz initrd=initrd.img "));
    assert!(kernel.contains(" edgeimg.root=http://10.0.2.100:8080/rootfs.squashfs "));
    assert!(kernel.contains(&format!(" edgeimg.root_sha256={root_sha} ")));
    assert!(kernel.contains(" edgeimg.config=http://10.0.2.100:8080/node/${mac:hexhyp}/ "));
    assert!(kernel.contains("console=ttyS0,115200"));
    assert!(!kernel.contains("PARTUUID"));
    assert!(ipxe.contains("\ninitrd http://10.0.2.100:8080/initrd.img"));
    assert!(ipxe.contains("\nboot"));

    // Matchbox JSON parses and says the same as boot.ipxe.
    let p: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.join("matchbox/profiles/edgeimg-x86-64-worker.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(p["id"], "edgeimg-x86-64-worker");
    assert_eq!(p["boot"]["kernel"], "http://10.0.2.100:8080/vmlinuz");
    assert_eq!(p["boot"]["initrd"][0], "http://10.0.2.100:8080/initrd.img");
    let args: Vec<&str> = p["boot"]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(args.contains(&format!("edgeimg.root_sha256={root_sha}").as_str()));
    // Matchbox renders `kernel {{.Kernel}}{{range $arg := .Args}} {{$arg}}{{end}}` (its
    // http/ipxe.go) and adds no `initrd=`: the line it serves must be boot.ipxe's, which the
    // EFI stub needs `initrd=initrd.img` in.
    assert_eq!(
        format!(
            "kernel {} {}",
            p["boot"]["kernel"].as_str().unwrap(),
            args.join(" ")
        ),
        kernel.trim_end_matches(" || goto failed"),
        "Matchbox would serve another kernel line than boot.ipxe"
    );
    assert!(args.contains(&"initrd=initrd.img"), "{args:?}");
    let g: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.join("matchbox/groups/edgeimg-x86-64-worker-default.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(g["profile"], p["id"]);

    // manifest.json: the root digest and every output.
    check_json(
        "manifest.schema.json",
        &std::fs::read(dir.join("manifest.json")).unwrap(),
    );
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(m["root_sha256"], root_sha.as_str());
    assert_eq!(m["base_url"], "http://10.0.2.100:8080");
    assert_eq!(m["token_included"], true);

    // The node config: node.env carries the storage device; index lists every file.
    let env = std::fs::read_to_string(dir.join("node/default/node.env")).unwrap();
    assert!(env.contains("STORAGE_DEVICE='/dev/vda'"), "{env}");
    let index = std::fs::read_to_string(dir.join("node/default/index")).unwrap();
    for f in ["node.env", "node.toml", "token", "files/0"] {
        assert!(index.lines().any(|l| l == f), "{f} not in index:\n{index}");
    }
}

#[test]
fn serve_gives_the_listed_bytes_ranges_and_refuses_traversal() {
    let dir = pxe_dir();
    let s = serve(&dir);
    let sums = std::fs::read_to_string(dir.join("SHA256SUMS")).unwrap();
    for line in sums.lines() {
        let (want, name) = line.split_once("  ").unwrap();
        let (status, _, body) = get(s.port, "GET", &format!("/{name}"), "");
        assert_eq!(status, 200, "{name}");
        assert_eq!(sha256_hex(&body), want, "{name} served other bytes");
    }
    let whole = std::fs::read(dir.join("vmlinuz")).unwrap();
    let (status, head, body) = get(s.port, "GET", "/vmlinuz", "Range: bytes=100-199\r\n");
    assert_eq!(status, 206);
    assert!(head.contains(&format!("Content-Range: bytes 100-199/{}", whole.len())));
    assert_eq!(body, &whole[100..200]);
    let (status, _, body) = get(s.port, "GET", "/vmlinuz", "Range: bytes=-16\r\n");
    assert_eq!((status, body.as_slice()), (206, &whole[whole.len() - 16..]));
    let (status, _, _) = get(s.port, "GET", "/vmlinuz", "Range: bytes=999999999-\r\n");
    assert_eq!(status, 416);
    let (status, head, body) = get(s.port, "HEAD", "/initrd.img", "");
    assert_eq!(status, 200);
    assert!(body.is_empty());
    assert!(head.contains("Accept-Ranges: bytes"));

    // Outside the folder: by .., encoded .., or a symlink out: 403; not there: 404.
    std::os::unix::fs::symlink("/etc/passwd", dir.join("escape")).ok();
    for p in [
        "/../manifest.json",
        "/node/../../out/x86-64-worker.img",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/escape",
    ] {
        let (status, _, body) = get(s.port, "GET", p, "");
        assert_eq!(status, 403, "{p}: {}", String::from_utf8_lossy(&body));
    }
    let (status, _, _) = get(s.port, "GET", "/nope", "");
    assert_eq!(status, 404);
    let (status, _, _) = get(s.port, "PUT", "/vmlinuz", "");
    assert_eq!(status, 405);
    std::fs::remove_file(dir.join("escape")).ok();
    let log = s.log.lock().unwrap();
    assert!(
        log.iter().any(|l| l.contains("\"GET /vmlinuz\" 206 100")),
        "{log:?}"
    );
    assert!(
        log.iter().any(|l| l.contains("\"GET /escape\" 403")),
        "{log:?}"
    );
}

fn options(mac: &str, port: u16) -> SmokeOptions {
    SmokeOptions {
        mac: Some(mac.into()),
        guestfwd: vec![format!("tcp:10.0.2.100:8080-tcp:127.0.0.1:{port}")],
        ..smoke_options("worker", "pxe-node-1")
    }
}

/// A copy of the pxe folder (hard links, so nothing is written twice) whose node config is
/// only in the folder of MAC: proves the per-machine lookup.
fn per_mac_copy(to: &Path) {
    let from = pxe_dir();
    for e in walk(&from) {
        let rel = e.strip_prefix(&from).unwrap();
        let rel = match rel.strip_prefix("node/default") {
            Ok(r) => Path::new("node").join(MAC.replace(':', "-")).join(r),
            Err(_) => rel.to_path_buf(),
        };
        let dst = to.join(rel);
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::hard_link(&e, &dst).unwrap();
    }
}

fn walk(d: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(d).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            v.extend(walk(&p));
        } else {
            v.push(p);
        }
    }
    v
}

#[test]
fn netboot_with_ipxe_reaches_ready_and_a_wrong_root_digest_stops() {
    if !Path::new(ROM).is_file() {
        panic!("{ROM} is missing: install ipxe-qemu (scripts/install-deps test)");
    }
    let tmp = tempfile::tempdir().unwrap();
    let good = tmp.path().join("good");
    per_mac_copy(&good);
    let spec = board_qemu("x86-64");
    let s = serve(&good);
    // A blank disk for [storage] device = "/dev/vda".
    let data = tmp.path().join("data.img");
    std::fs::File::create(&data)
        .unwrap()
        .set_len(256 << 20)
        .unwrap();
    let r = qemu::netboot(
        &spec,
        &options(MAC, s.port),
        &good,
        "boot.ipxe",
        Path::new(ROM),
        Some(&data),
        None,
        &Silent,
    )
    .unwrap_or_else(|e| panic!("netboot: {e:#}\nserve log: {:?}", s.log.lock().unwrap()));
    let console = r.console.join("\n");
    eprintln!("netboot: ready after {:.1} s", r.boot_seconds);
    assert_eq!(
        r.ready_line,
        format!("edgeimg: ready role=worker hostname=pxe-node-1 root=ro k0s={K0S_VERSION}")
    );
    for want in [
        "tftp://10.0.2.2/boot.ipxe",
        "edgeimg: network: eth0 10.0.2.15 by DHCP",
        "fetched into RAM",
        "sha256 ok",
        &format!(
            "edgeimg: config: node config from http://10.0.2.100:8080/node/{}/",
            MAC.replace(':', "-")
        ),
        "edgeimg: data: ext4 /dev/vda created",
        "boot-cmd-ran=from-the-network",
        "--token-file /var/lib/k0s/join-token",
    ] {
        assert!(console.contains(want), "console lacks {want:?}:\n{console}");
    }
    let log = s.log.lock().unwrap().clone();
    for f in ["/vmlinuz", "/initrd.img", "/rootfs.squashfs"] {
        assert!(
            log.iter().any(|l| l.contains(&format!("\"GET {f}\" 200"))),
            "{f} not served: {log:?}"
        );
    }

    // The same files but a root with one byte changed: the initramfs refuses it.
    let bad = tmp.path().join("bad");
    per_mac_copy(&bad);
    let root = bad.join("rootfs.squashfs");
    let mut bytes = std::fs::read(&root).unwrap();
    std::fs::remove_file(&root).unwrap();
    let n = bytes.len();
    bytes[n - 100] ^= 0xff;
    std::fs::write(&root, bytes).unwrap();
    let s2 = serve(&bad);
    let marker = "edgeimg: FAILED: root image digest";
    let r = qemu::netboot(
        &spec,
        &options(MAC, s2.port),
        &bad,
        "boot.ipxe",
        Path::new(ROM),
        None,
        Some(marker),
        &Silent,
    )
    .expect("the wrong-digest boot should print its failure");
    assert!(
        r.ready_line.contains("root image digest mismatch"),
        "{}",
        r.ready_line
    );
    assert!(!r.console.iter().any(|l| l.contains("switch_root")));
}

#[test]
fn raw_image_boots_from_a_usb_stick_and_grows_its_data() {
    let image = built().out.join("x86-64-worker.img");
    let mut spec = board_qemu("x86-64");
    spec.disk = qemu::DiskInterface::Usb;
    let mut opts = options(MAC, 0);
    opts.guestfwd.clear();
    let r = qemu::smoke(&image, &spec, &opts, &Silent).expect("USB boot");
    let console = r.console.join("\n");
    eprintln!("usb: ready after {:.1} s", r.boot_seconds);
    assert!(console.contains("partition grown"), "{console}");
    assert!(
        r.console
            .iter()
            .any(|l| l.contains("edgeimg: partitions: root=/dev/sd")),
        "root not on a USB (sd) disk:\n{console}"
    );
}

/// A sparse copy of the built image whose node.env asks for an install onto /dev/vda.
fn image_asking_for_install(to: &Path) {
    sparse_copy(&built().out.join("x86-64-worker.img"), to);
    let text = NODE.replace(
        "[storage]\ndevice = \"/dev/vda\"",
        "[install]\ndevice = \"/dev/vda\"",
    );
    assert!(text.contains("[install]"));
    let dir = to.parent().unwrap();
    std::fs::write(dir.join("join.token"), format!("{TEST_JOIN_TOKEN}\n")).unwrap();
    let node = edgeimg::node::NodeConfig::from_toml_str(&text, &dir.join("node.toml")).unwrap();
    let rendered = node.render().unwrap();
    let env = rendered.get("edgeimg/node.env").unwrap().to_vec();
    assert!(String::from_utf8_lossy(&env).contains("INSTALL_DEVICE='/dev/vda'"));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(to)
        .unwrap();
    let table = edgeimg::disk::read::read_table(&file, "image").unwrap();
    let esp = &table.partitions[0];
    let mut fat = edgeimg::fs::fat::FatVolume::open(file, esp.start_lba * 512).unwrap();
    fat.write_file("edgeimg/node.env", &env).unwrap();
}

#[test]
fn usb_booted_node_installs_to_a_blank_disk_which_then_boots_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let stick = tmp.path().join("stick.img");
    image_asking_for_install(&stick);
    let target = tmp.path().join("nvme.img");
    std::fs::File::create(&target)
        .unwrap()
        .set_len(3 << 30)
        .unwrap();
    let mut usb = board_qemu("x86-64");
    usb.disk = qemu::DiskInterface::Usb;
    usb.extra_args.extend([
        "-drive".into(),
        format!("file={},format=raw,if=none,id=d1", target.display()),
        "-device".into(),
        "virtio-blk-pci,drive=d1".into(),
    ]);
    let mut opts = options(MAC, 0);
    opts.guestfwd.clear();
    let done = "edgeimg: install: done";
    let r = qemu::smoke_until(&stick, &usb, &opts, done, &Silent).expect("install boot");
    eprintln!("install: done after {:.1} s", r.boot_seconds);
    let console = r.console.join("\n");
    assert!(
        console.contains("edgeimg: install: writing the edgeimg layout of /dev/sd"),
        "{console}"
    );
    // sfdisk (not edgeimg) reads the installed table: boot, two root slots, data to the end.
    let o = run_tool("sfdisk", &["--json", target.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let t: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let parts = t["partitiontable"]["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 4);
    let end = parts[3]["start"].as_u64().unwrap() + parts[3]["size"].as_u64().unwrap();
    assert!(
        end > (3u64 << 30) / 512 - 4096,
        "data does not fill the disk: {t}"
    );

    // The installed disk alone (virtio) comes up with the same role and hostname.
    let disk_only = board_qemu("x86-64");
    let r = qemu::boot_disk(&target, &disk_only, &opts, None, &Silent).expect("installed boot");
    eprintln!("installed disk: ready after {:.1} s", r.boot_seconds);
    assert_eq!(
        r.ready_line,
        format!("edgeimg: ready role=worker hostname=pxe-node-1 root=ro k0s={K0S_VERSION}")
    );
    let console = r.console.join("\n");
    assert!(
        console.contains("edgeimg: install: running from the installed disk /dev/vda"),
        "{console}"
    );
    assert!(
        console.contains("edgeimg: partitions: root=/dev/vda2"),
        "{console}"
    );
    assert!(
        console.contains("--token-file /var/lib/k0s/join-token"),
        "{console}"
    );
}
